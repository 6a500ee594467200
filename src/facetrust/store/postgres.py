"""The server backend: a gallery in a PostgreSQL database (with pgvector).

For deployments that outgrow one machine: several service processes or hosts
share one gallery, and the database brings the usual replication and backups.
Needs the ``postgres`` extra (``psycopg[binary]``) and a server with the
``vector`` extension (pgvector) installed; the schema is created and upgraded
by facetrust (versions in the ``facetrust_schema`` table).

Transactions mirror the SQLite store: a write transaction takes a
transaction-scoped advisory lock first (as SQLite's ``BEGIN IMMEDIATE`` takes
the write lock), so writers are serialised and each sees every earlier commit;
a snapshot is a ``REPEATABLE READ READ ONLY`` transaction. The audit log is
append-only by trigger (``UPDATE``, ``DELETE`` and ``TRUNCATE`` are refused).

Erasure: PostgreSQL has no ``secure_delete``. A deleted row's bytes stay in
the table's pages until ``VACUUM`` reuses them, and in WAL archives and base
backups until they age out. Erasure therefore rests on crypto-shredding: the
subject's data key is destroyed in the key store, which makes every copy of
the ciphertext unreadable; :meth:`PostgresStore.reclaim` then runs ``VACUUM``
on the tables that held biometric data. Keep the key store in another database
(ideally another server) whose backups rotate quickly: a backup of the key
store holds keys that erasure destroyed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ._pgvector import VectorSearch
from .base import (
    AuditHead,
    AuditRecord,
    ConsentRecord,
    EventMemberRecord,
    EventRecord,
    IdentificationRecord,
    OptOutRecord,
    PhotoRecord,
    ProbeCropRecord,
    ReviewRecord,
    StoreChanges,
    SubjectRecord,
    TemplateRecord,
)
from .postgres_migrations import GALLERY_MIGRATIONS, KEYSTORE_MIGRATIONS

if TYPE_CHECKING:
    import psycopg

#: Advisory lock keys (any 64-bit numbers unique to facetrust): "FTG1", "FTK1".
_LOCKS = {"gallery": 0x46544731, "keystore": 0x46544B31}
_MIGRATION_LOCK = 0x46544D31  # "FTM1"

_SUBJECT_COLUMNS = "subject_id, display_name, created_at, last_interaction_at, erased_at"
_CONSENT_COLUMNS = (
    "consent_id, subject_id, purposes, granted_at, expires_at, evidence_ref, evidence_sha256, "
    "notice_version, withdrawn_at, withdrawal_reason"
)
_TEMPLATE_COLUMNS = "template_id, subject_id, model_id, ciphertext, created_at, source_digest"
_AUDIT_COLUMNS = "seq, recorded_at, kind, actor, purpose, subject_ids, body, prev_mac, mac"



def is_database_url(value: str | None) -> bool:
    """Whether ``value`` is a PostgreSQL connection URL (``postgresql://...``)."""
    return bool(value) and str(value).startswith(("postgresql://", "postgres://"))


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "The PostgreSQL backend needs psycopg 3. Install it with "
            "`pip install 'facetrust[postgres]'`."
        ) from None
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as error:
        raise StoreError(
            f"Cannot connect to the PostgreSQL database {redact_url(url)!r}: "
            f"{str(error).strip()}. Check the URL, that the server runs and that the "
            "database exists (create it with `createdb`)."
        ) from None


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    return f"{scheme}{sep}{user}:***@{host}" if password else url


class _PostgresBase:
    """Connection, transactions and migrations shared by both stores."""

    _kind = "gallery"
    _migrations: list[str] = GALLERY_MIGRATIONS

    def __init__(self, url: str, *, create: bool = False) -> None:
        import psycopg

        self.url = url
        self._errors = psycopg
        self._db = _connect(url)
        self._depth = 0
        self._stamp: int | None = None
        try:
            self._migrate(create)
        except psycopg.Error as error:
            self._db.close()
            raise StoreError(
                f"Cannot open {redact_url(url)!r} as a facetrust {self._kind}: "
                f"{str(error).strip()}."
            ) from None
        except StoreError:
            self._db.close()
            raise

    def _version(self) -> int | None:
        row = self._db.execute("SELECT to_regclass('facetrust_schema')").fetchone()
        if row is None or row[0] is None:
            return None
        found = self._db.execute(
            "SELECT kind, version FROM facetrust_schema"
        ).fetchall()
        kinds = {str(k): int(v) for k, v in found}
        if self._kind not in kinds:
            raise StoreError(
                f"{redact_url(self.url)!r} holds a facetrust {', '.join(kinds) or 'schema'}, not "
                f"a {self._kind}. Give the {self._kind} its own database."
            )
        return kinds[self._kind]

    def _migrate(self, create: bool) -> None:
        version = self._version()
        if version is None and not create:
            raise StoreError(
                f"{redact_url(self.url)!r} holds no facetrust {self._kind}. Create one with "
                "`facetrust init --database-url URL`, or check the URL."
            )
        if version is not None and version > len(self._migrations):
            raise StoreError(
                f"{redact_url(self.url)!r} has {self._kind} schema version {version}, newer than "
                f"this facetrust understands ({len(self._migrations)}). Upgrade facetrust."
            )
        if version == len(self._migrations):
            return
        self._db.execute("BEGIN")
        try:
            # Several processes may open a fresh database at once: one migrates.
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = self._version()
            if version is None:
                tables = self._db.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                ).fetchone()
                if tables is not None and tables[0]:
                    raise StoreError(
                        f"{redact_url(self.url)!r} already holds tables that are not a facetrust "
                        f"{self._kind}. Give facetrust an empty database."
                    )
                self._db.execute(
                    "CREATE TABLE facetrust_schema (kind TEXT PRIMARY KEY, version INT NOT NULL)"
                )
                self._db.execute(
                    "INSERT INTO facetrust_schema VALUES (%s, 0)", (self._kind,)
                )
                version = 0
            for number, script in enumerate(self._migrations[version:], start=version + 1):
                self._db.execute(script.encode())  # several statements: no parameters
                self._db.execute(
                    "UPDATE facetrust_schema SET version = %s WHERE kind = %s",
                    (number, self._kind),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN")
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCKS[self._kind],))
        except self._errors.Error as error:
            self._rollback()
            raise StoreError(
                f"Cannot start a write on {redact_url(self.url)!r}: {error}."
            ) from None
        self._depth = 1
        self._stamp = None
        try:
            yield
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        try:
            self._db.execute("COMMIT")
        except self._errors.Error as error:
            raise StoreError(f"The write to {redact_url(self.url)!r} failed: {error}.") from None

    def _rollback(self) -> None:
        if not self._db.closed:
            self._db.execute("ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _vacuum(self, tables: Sequence[str]) -> None:
        if self._depth:
            raise StoreError("reclaim() must run after the transaction commits (a bug).")
        for table in tables:
            self._db.execute(f"VACUUM {table}".encode())

    def _write(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if not self._depth:
            raise StoreError("A write must run inside `with store.transaction():` (a bug).")
        try:
            return self._db.execute(sql.encode(), params)
        except self._errors.IntegrityError as error:
            # The transaction is aborted: the caller's `with transaction()` rolls it back.
            raise StoreError(
                f"The change breaks a rule of the {self._kind} ({str(error).strip()}): a record "
                "it refers to is missing, or one with the same key exists."
            ) from None
        except self._errors.Error as error:
            raise self._failure(error) from None

    def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql.encode(), params).fetchall()
        except self._errors.Error as error:
            raise self._failure(error) from None

    def _failure(self, error: Exception) -> StoreError:
        """A driver error (lost connection, server gone, ...) as a StoreError."""
        return StoreError(
            f"The {self._kind} database {redact_url(self.url)!r} failed: {str(error).strip()}. "
            "Check that the server is reachable, then retry."
        )


class PostgresStore(_PostgresBase, VectorSearch):
    """:class:`~facetrust.store.base.Store` in one PostgreSQL database.

    Parameters
    ----------
    url : str
        ``postgresql://user:password@host:port/database`` (libpq URL or DSN).
    create : bool
        Create the schema if the database is empty; otherwise a database
        without a facetrust gallery is a StoreError.

    Attributes
    ----------
    keep_removals : int
        How many template tombstones :meth:`changes_since` keeps (the newest);
        a reader further behind reloads in full.

    The opt-in in-database search (``put_vectors``, ``search_vectors``) comes
    from :class:`~facetrust.store._pgvector.VectorSearch`.
    """

    keep_removals = 100_000

    def __init__(self, url: str, *, create: bool = False) -> None:
        super().__init__(url, create=create)
        self._counts = {}

    def reclaim(self) -> None:
        """VACUUM the tables that held biometric data (deleted rows' space is reused).

        This is not a secure delete: old pages, WAL archives and backups keep
        the ciphertext until they age out; it is unreadable once the subject's
        data key is destroyed.
        """
        self._vacuum(("templates", "template_vectors", "photos", "probe_crops"))

    def get_meta(self, name: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE name = %s", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._write(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = "
            "EXCLUDED.value",
            (name, value),
        )

    def get_secret(self, name: str) -> bytes | None:
        rows = self._rows("SELECT wrapped FROM secrets WHERE name = %s", (name,))
        return bytes(rows[0][0]) if rows else None

    def put_secret(self, name: str, wrapped: bytes) -> None:
        self._write(
            "INSERT INTO secrets VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET wrapped = "
            "EXCLUDED.wrapped",
            (name, wrapped),
        )

    def generation(self) -> int:
        if self._depth:
            self._stamp = None  # a write after this read must move the counter again
        return int(self._rows("SELECT value FROM counters WHERE name = 'generation'")[0][0])

    def bump_generation(self) -> None:
        self._change_stamp()

    def _change_stamp(self) -> int:
        """The generation this transaction's changes are stamped with (moves the counter once).

        The UPDATE takes the counter's row lock until commit: with the advisory
        lock taken at the transaction's start, writers stamp in commit order.
        """
        if self._stamp is None:
            rows = self._write(
                "UPDATE counters SET value = value + 1 WHERE name = 'generation' RETURNING value"
            ).fetchall()
            self._stamp = int(rows[0][0])
        return self._stamp

    def changes_since(self, generation: int) -> StoreChanges | None:
        with self.snapshot():
            current = self.generation()
            oldest = int(
                self._rows("SELECT value FROM counters WHERE name = 'changes_from'")[0][0]
            )
            if not oldest <= generation <= current:
                return None
            if generation == current:
                return StoreChanges(current, [], [], [])
            templates = self._rows(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE changed_gen > %s "
                "ORDER BY changed_gen, ord",
                (generation,),
            )
            removed = self._rows(
                "SELECT template_id FROM template_removals WHERE generation > %s ORDER BY seq",
                (generation,),
            )
            subjects = self._rows(
                "SELECT subject_id FROM subjects WHERE changed_gen > %s UNION "
                "SELECT subject_id FROM consents WHERE changed_gen > %s ORDER BY 1",
                (generation, generation),
            )
        return StoreChanges(
            current,
            [_template(row) for row in templates],
            list(dict.fromkeys(str(row[0]) for row in removed)),
            [str(row[0]) for row in subjects],
        )

    def insert_subject(self, subject: SubjectRecord) -> None:
        if self.get_subject(subject.subject_id) is not None:
            raise StoreError(
                f"A subject with id {subject.subject_id!r} already exists (or was erased; "
                "erased ids are never reused). Choose another id."
            )
        self._write(
            f"INSERT INTO subjects ({_SUBJECT_COLUMNS}, changed_gen) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                subject.subject_id,
                subject.display_name,
                subject.created_at,
                subject.last_interaction_at,
                subject.erased_at,
                self._change_stamp(),
            ),
        )

    def get_subject(self, subject_id: str) -> SubjectRecord | None:
        rows = self._rows(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE subject_id = %s", (subject_id,)
        )
        return SubjectRecord(*rows[0]) if rows else None

    def get_subjects(self, subject_ids: Sequence[str]) -> list[SubjectRecord]:
        rows = self._rows(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE subject_id = ANY(%s) ORDER BY ord",
            (list(subject_ids),),
        )
        return [SubjectRecord(*row) for row in rows]

    def list_subjects(self, include_erased: bool = False) -> list[SubjectRecord]:
        where = "" if include_erased else " WHERE erased_at IS NULL"
        rows = self._rows(f"SELECT {_SUBJECT_COLUMNS} FROM subjects{where} ORDER BY ord")
        return [SubjectRecord(*row) for row in rows]

    def touch_subject(self, subject_id: str, at: str) -> None:
        self._write(
            "UPDATE subjects SET last_interaction_at = %s, changed_gen = %s WHERE subject_id = %s",
            (at, self._change_stamp(), subject_id),
        )

    def mark_subject_erased(self, subject_id: str, at: str) -> None:
        self._write(
            "UPDATE subjects SET erased_at = %s, display_name = NULL, changed_gen = %s "
            "WHERE subject_id = %s",
            (at, self._change_stamp(), subject_id),
        )

    def insert_consent(self, consent: ConsentRecord) -> None:
        self._write(
            f"INSERT INTO consents ({_CONSENT_COLUMNS}, changed_gen) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                consent.consent_id,
                consent.subject_id,
                json.dumps(list(consent.purposes)),
                consent.granted_at,
                consent.expires_at,
                consent.evidence_ref,
                consent.evidence_sha256,
                consent.notice_version,
                consent.withdrawn_at,
                consent.withdrawal_reason,
                self._change_stamp(),
            ),
        )

    def consents_of(self, subject_id: str) -> list[ConsentRecord]:
        rows = self._rows(
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject_id = %s "
            "ORDER BY granted_at, ord",
            (subject_id,),
        )
        return [_consent(row) for row in rows]

    def consents_of_subjects(self, subject_ids: Sequence[str]) -> list[ConsentRecord]:
        rows = self._rows(
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject_id = ANY(%s) ORDER BY ord",
            (list(subject_ids),),
        )
        return [_consent(row) for row in rows]

    def all_consents(self) -> list[ConsentRecord]:
        rows = self._rows(f"SELECT {_CONSENT_COLUMNS} FROM consents ORDER BY ord")
        return [_consent(row) for row in rows]

    def withdraw_consent(self, consent_id: str, at: str, reason: str) -> None:
        self._write(
            "UPDATE consents SET withdrawn_at = %s, withdrawal_reason = %s, changed_gen = %s "
            "WHERE consent_id = %s AND withdrawn_at IS NULL",
            (at, reason, self._change_stamp(), consent_id),
        )

    def insert_template(self, template: TemplateRecord) -> None:
        self._write(
            f"INSERT INTO templates ({_TEMPLATE_COLUMNS}, changed_gen) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                template.template_id,
                template.subject_id,
                template.model_id,
                template.ciphertext,
                template.created_at,
                template.source_digest,
                self._change_stamp(),
            ),
        )

    def templates_of(self, subject_id: str) -> list[TemplateRecord]:
        rows = self._rows(
            f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE subject_id = %s ORDER BY ord",
            (subject_id,),
        )
        return [_template(row) for row in rows]

    def all_templates(self) -> list[TemplateRecord]:
        rows = self._rows(f"SELECT {_TEMPLATE_COLUMNS} FROM templates ORDER BY ord")
        return [_template(row) for row in rows]

    def template_model_ids(self) -> list[str]:
        rows = self._rows("SELECT DISTINCT model_id FROM templates ORDER BY model_id")
        return [str(row[0]) for row in rows]

    def replace_template_ciphertext(self, template_id: str, ciphertext: bytes) -> None:
        self._write(
            "UPDATE templates SET ciphertext = %s, changed_gen = %s WHERE template_id = %s",
            (ciphertext, self._change_stamp(), template_id),
        )

    def insert_photo(self, photo: PhotoRecord) -> None:
        self._write(
            "INSERT INTO photos (photo_id, subject_id, ciphertext, created_at) "
            "VALUES (%s, %s, %s, %s)",
            (photo.photo_id, photo.subject_id, photo.ciphertext, photo.created_at),
        )

    def photos_of(self, subject_id: str) -> list[PhotoRecord]:
        rows = self._rows(
            "SELECT photo_id, subject_id, ciphertext, created_at FROM photos "
            "WHERE subject_id = %s ORDER BY ord",
            (subject_id,),
        )
        return [PhotoRecord(row[0], row[1], bytes(row[2]), row[3]) for row in rows]

    def delete_biometrics(self, subject_id: str) -> int:
        self._write(
            "INSERT INTO template_removals (template_id, generation) "
            "SELECT template_id, %s FROM templates WHERE subject_id = %s",
            (self._change_stamp(), subject_id),
        )
        self._prune_removals()
        # template_vectors rows go with their templates (ON DELETE CASCADE)
        templates = self._write("DELETE FROM templates WHERE subject_id = %s", (subject_id,))
        photos = self._write("DELETE FROM photos WHERE subject_id = %s", (subject_id,))
        crops = self._write("DELETE FROM probe_crops WHERE subject_id = %s", (subject_id,))
        return int(templates.rowcount + photos.rowcount + crops.rowcount)

    def _prune_removals(self) -> None:
        """Keep the newest ``keep_removals`` tombstones; older readers then reload in full."""
        cutoff = self._rows(
            "SELECT seq, generation FROM template_removals ORDER BY seq DESC LIMIT 1 OFFSET %s",
            (self.keep_removals,),
        )
        if cutoff:
            seq, generation = cutoff[0]
            self._write("DELETE FROM template_removals WHERE seq <= %s", (seq,))
            self._write(
                "UPDATE counters SET value = greatest(value, %s) WHERE name = 'changes_from'",
                (generation,),
            )

    def insert_event(self, event: EventRecord) -> None:
        self._write(
            "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.event_id,
                event.purpose,
                event.valid_from,
                event.valid_to,
                event.operating_point,
                event.created_at,
                event.created_by,
                event.closed_at,
            ),
        )

    def get_event(self, event_id: str) -> EventRecord | None:
        rows = self._rows("SELECT * FROM events WHERE event_id = %s", (event_id,))
        return EventRecord(*rows[0]) if rows else None

    def list_events(self) -> list[EventRecord]:
        return [EventRecord(*row) for row in self._rows("SELECT * FROM events ORDER BY event_id")]

    def close_event(self, event_id: str, at: str) -> None:
        self._write("UPDATE events SET closed_at = %s WHERE event_id = %s", (at, event_id))

    def put_event_member(self, member: EventMemberRecord) -> None:
        self._write(
            "INSERT INTO event_members VALUES (%s, %s, %s, %s) ON CONFLICT (event_id, subject_id) "
            "DO UPDATE SET event_only = EXCLUDED.event_only, added_at = EXCLUDED.added_at",
            (member.event_id, member.subject_id, member.event_only, member.added_at),
        )

    def remove_event_member(self, event_id: str, subject_id: str) -> bool:
        cursor = self._write(
            "DELETE FROM event_members WHERE event_id = %s AND subject_id = %s",
            (event_id, subject_id),
        )
        return cursor.rowcount > 0

    def event_members(self, event_id: str) -> list[EventMemberRecord]:
        rows = self._rows(
            "SELECT * FROM event_members WHERE event_id = %s ORDER BY subject_id", (event_id,)
        )
        return [EventMemberRecord(e, s, bool(only), at) for e, s, only, at in rows]

    def insert_opt_out(self, opt_out: OptOutRecord) -> None:
        self._write(
            "INSERT INTO event_opt_outs VALUES (%s, %s, %s, %s) ON CONFLICT (event_id, reference) "
            "DO UPDATE SET subject_id = EXCLUDED.subject_id, opted_out_at = EXCLUDED.opted_out_at",
            (opt_out.event_id, opt_out.reference, opt_out.subject_id, opt_out.opted_out_at),
        )

    def opt_outs(self, event_id: str) -> list[OptOutRecord]:
        rows = self._rows(
            "SELECT * FROM event_opt_outs WHERE event_id = %s ORDER BY reference", (event_id,)
        )
        return [OptOutRecord(*row) for row in rows]

    def insert_probe_crop(self, crop: ProbeCropRecord) -> None:
        self._write(
            "INSERT INTO probe_crops VALUES (%s, %s, %s, %s, %s, %s)",
            (
                crop.crop_id,
                crop.event_id,
                crop.subject_id,
                crop.ciphertext,
                crop.created_at,
                crop.delete_after,
            ),
        )

    def probe_crops(self, event_id: str | None = None) -> list[ProbeCropRecord]:
        if event_id is None:
            rows = self._rows("SELECT * FROM probe_crops ORDER BY created_at, crop_id")
        else:
            rows = self._rows(
                "SELECT * FROM probe_crops WHERE event_id = %s ORDER BY created_at, crop_id",
                (event_id,),
            )
        return [ProbeCropRecord(c, e, s, bytes(b), at, until) for c, e, s, b, at, until in rows]

    def delete_probe_crops(self, crop_ids: list[str]) -> int:
        if not crop_ids:
            return 0
        cursor = self._write("DELETE FROM probe_crops WHERE crop_id = ANY(%s)", (list(crop_ids),))
        return int(cursor.rowcount)

    def insert_identification(self, identification: IdentificationRecord) -> None:
        record = identification
        self._write(
            "INSERT INTO identifications VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                record.identification_id,
                record.purpose,
                record.actor,
                record.case_ref,
                record.probe_sha256,
                record.model_id,
                record.operating_point,
                record.threshold,
                record.started_at,
                record.ended_at,
                json.dumps([list(c) for c in record.candidates]),
            ),
        )

    def get_identification(self, identification_id: str) -> IdentificationRecord | None:
        rows = self._rows(
            "SELECT * FROM identifications WHERE identification_id = %s", (identification_id,)
        )
        if not rows:
            return None
        row = rows[0]
        candidates = tuple((str(s), float(d), int(r)) for s, d, r in json.loads(row[10]))
        return IdentificationRecord(
            identification_id=row[0],
            purpose=row[1],
            actor=row[2],
            case_ref=row[3],
            probe_sha256=row[4],
            model_id=row[5],
            operating_point=row[6],
            threshold=float(row[7]),
            started_at=row[8],
            ended_at=row[9],
            candidates=candidates,
        )

    def insert_review(self, review: ReviewRecord) -> None:
        self._write(
            "INSERT INTO reviews (identification_id, subject_id, reviewer, decision, decided_at, "
            "note) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (identification_id, subject_id, reviewer) DO UPDATE SET "
            "decision = EXCLUDED.decision, decided_at = EXCLUDED.decided_at, "
            "note = EXCLUDED.note",
            (
                review.identification_id,
                review.subject_id,
                review.reviewer,
                review.decision,
                review.decided_at,
                review.note,
            ),
        )

    def reviews_of(self, identification_id: str) -> list[ReviewRecord]:
        rows = self._rows(
            "SELECT identification_id, subject_id, reviewer, decision, decided_at, note "
            "FROM reviews WHERE identification_id = %s ORDER BY decided_at, ord",
            (identification_id,),
        )
        return [ReviewRecord(*row) for row in rows]

    def append_audit(self, record: AuditRecord) -> None:
        self._write(
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                record.seq,
                record.recorded_at,
                record.kind,
                record.actor,
                record.purpose,
                json.dumps(list(record.subject_ids)),
                record.body,
                record.prev_mac,
                record.mac,
            ),
        )

    def last_audit(self) -> AuditRecord | None:
        rows = self._rows(f"SELECT {_AUDIT_COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT 1")
        return _audit(rows[0]) if rows else None

    def audit_records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        last = after_seq
        while True:
            rows = self._rows(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE seq > %s ORDER BY seq "
                "LIMIT 5000",
                (last,),
            )
            if not rows:
                return
            for row in rows:
                yield _audit(row)
            last = int(rows[-1][0])

    def get_audit_head(self) -> AuditHead | None:
        rows = self._rows("SELECT seq, mac, head_mac FROM audit_head WHERE id = 1")
        return AuditHead(int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def set_audit_head(self, head: AuditHead) -> None:
        self._write(
            "INSERT INTO audit_head VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "seq = EXCLUDED.seq, mac = EXCLUDED.mac, head_mac = EXCLUDED.head_mac",
            (head.seq, head.mac, head.head_mac),
        )

def _consent(row: tuple[Any, ...]) -> ConsentRecord:
    return ConsentRecord(row[0], row[1], tuple(json.loads(row[2])), *row[3:])


def _template(row: tuple[Any, ...]) -> TemplateRecord:
    return TemplateRecord(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])


def _audit(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        int(row[0]), row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), *row[6:]
    )


class PostgresKeyStore(_PostgresBase):
    """:class:`~facetrust.store.base.KeyStore` in its own PostgreSQL database.

    Give it a different database from the gallery's, ideally on another
    server, with backups on a short rotation: erasing a subject destroys its
    key here and only here, and a restored backup of this database would
    bring erased keys back. :meth:`reclaim` runs ``VACUUM`` on the key table.
    """

    _kind = "keystore"
    _migrations = KEYSTORE_MIGRATIONS

    def reclaim(self) -> None:
        """VACUUM the key table (see the class note on backups)."""
        self._vacuum(("data_keys",))

    def get_key(self, subject_id: str) -> bytes | None:
        rows = self._rows("SELECT wrapped FROM data_keys WHERE subject_id = %s", (subject_id,))
        return bytes(rows[0][0]) if rows else None

    def get_keys(self, subject_ids: Sequence[str]) -> dict[str, bytes]:
        rows = self._rows(
            "SELECT subject_id, wrapped FROM data_keys WHERE subject_id = ANY(%s)",
            (list(subject_ids),),
        )
        return {str(s): bytes(w) for s, w in rows}

    def put_key(self, subject_id: str, wrapped: bytes) -> None:
        self._write(
            "INSERT INTO data_keys VALUES (%s, %s) ON CONFLICT (subject_id) DO UPDATE SET "
            "wrapped = EXCLUDED.wrapped",
            (subject_id, wrapped),
        )

    def delete_key(self, subject_id: str) -> bool:
        cursor = self._write("DELETE FROM data_keys WHERE subject_id = %s", (subject_id,))
        return cursor.rowcount > 0

    def subject_ids(self) -> list[str]:
        return [str(row[0]) for row in self._rows("SELECT subject_id FROM data_keys")]

    def all_keys(self) -> dict[str, bytes]:
        """Every wrapped key by subject id (for bulk loading)."""
        rows = self._rows("SELECT subject_id, wrapped FROM data_keys")
        return {str(s): bytes(w) for s, w in rows}
