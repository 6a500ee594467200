"""The embedded default: a gallery in one SQLite file, its data keys in another.

Both files run in WAL mode (readers never block the writer) with foreign keys
on and ``secure_delete`` on, so deleted rows are overwritten with zeros rather
than left in free pages. :meth:`SqliteStore.reclaim` checkpoints and truncates
the write-ahead log, after which deleted bytes remain in neither file.

Writers take the write lock at the start of a transaction (``BEGIN
IMMEDIATE``) and wait up to ``busy_timeout_s`` for it, so several processes
can share a gallery file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
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
from .migrations import GALLERY_MIGRATIONS, KEYSTORE_MIGRATIONS

_SUBJECT_COLUMNS = "subject_id, display_name, created_at, last_interaction_at, erased_at"
_CONSENT_COLUMNS = (
    "consent_id, subject_id, purposes, granted_at, expires_at, evidence_ref, evidence_sha256, "
    "notice_version, withdrawn_at, withdrawal_reason"
)
_TEMPLATE_COLUMNS = "template_id, subject_id, model_id, ciphertext, created_at, source_digest"
#: Most ``?`` placeholders in one statement (SQLite allows 32766 since 3.32).
_CHUNK = 500
_APPLICATION_IDS = {"gallery": 0x46544731, "keystore": 0x46544B31}  # "FTG1", "FTK1"


class _SqliteBase:
    """Connection handling, transactions and migrations shared by both files."""

    _kind = "gallery"
    _migrations: list[str] = GALLERY_MIGRATIONS

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = False, busy_timeout_s: float = 30.0
    ) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(
                f"No {self._kind} file at {str(self.path)!r}. Create a gallery with "
                "`facetrust init`, or point --gallery at an existing one."
            )
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"Cannot open {str(self.path)!r} as a facetrust {self._kind}: {error}."
            ) from None
        self._depth = 0
        self._stamp: int | None = None

    def _migrate(self) -> None:
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        expected = _APPLICATION_IDS[self._kind]
        foreign = app_id == 0 and (
            version != 0 or self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        )
        if app_id not in (0, expected) or foreign:
            raise StoreError(
                f"{str(self.path)!r} is a SQLite file but not a facetrust {self._kind}."
            )
        if version > len(self._migrations):
            raise StoreError(
                f"{str(self.path)!r} has schema version {version}, newer than this facetrust "
                f"understands ({len(self._migrations)}). Upgrade facetrust."
            )
        if version == len(self._migrations):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(self._migrations[version:], start=version + 1):
                for statement in _statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute(f"PRAGMA application_id = {expected}")
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
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise StoreError(f"Cannot start a write on {str(self.path)!r}: {error}.") from None
        self._depth = 1
        self._stamp = None
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._db.execute("BEGIN DEFERRED")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def reclaim(self) -> None:
        """Checkpoint and truncate the WAL so deleted bytes remain in no file."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if not self._depth:
            raise StoreError("A write must run inside `with store.transaction():` (a bug).")
        try:
            return self._db.execute(sql, params)
        except sqlite3.IntegrityError as error:
            raise StoreError(
                f"The change breaks a rule of the {self._kind} ({error}): a record it refers "
                "to is missing, or one with the same key exists."
            ) from None

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _rows_in(self, sql: str, values: Sequence[str]) -> list[tuple[Any, ...]]:
        """``sql`` with ``IN ({})`` filled for ``values``, run in chunks."""
        rows: list[tuple[Any, ...]] = []
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            rows += self._rows(sql.format(", ".join("?" * len(chunk))), tuple(chunk))
        return rows


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current))
    return statements


class SqliteStore(_SqliteBase):
    """:class:`~facetrust.store.base.Store` on one SQLite file.

    Parameters
    ----------
    path : path
        The gallery file (created when ``create`` is true).
    create : bool
        Create the file if missing; otherwise a missing file is a StoreError.
    busy_timeout_s : float
        How long a writer waits for another process's write to finish.

    Attributes
    ----------
    keep_removals : int
        How many template tombstones :meth:`changes_since` keeps (the newest);
        a reader further behind reloads in full.
    """

    keep_removals = 100_000

    def get_meta(self, name: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def get_secret(self, name: str) -> bytes | None:
        rows = self._rows("SELECT wrapped FROM secrets WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def put_secret(self, name: str, wrapped: bytes) -> None:
        self._write("INSERT OR REPLACE INTO secrets VALUES (?, ?)", (name, wrapped))

    def generation(self) -> int:
        if self._depth:
            self._stamp = None  # a write after this read must move the counter again
        return int(self._rows("SELECT value FROM counters WHERE name = 'generation'")[0][0])

    def bump_generation(self) -> None:
        self._change_stamp()

    def _change_stamp(self) -> int:
        """The generation this transaction's changes are stamped with (moves the counter once)."""
        if self._stamp is None:
            row = self._write(
                "UPDATE counters SET value = value + 1 WHERE name = 'generation' RETURNING value"
            ).fetchone()
            self._stamp = int(row[0])
        return self._stamp

    def changes_since(self, generation: int) -> StoreChanges | None:
        with self.snapshot():
            current = self.generation()
            oldest = int(self._rows("SELECT value FROM counters WHERE name = 'changes_from'")[0][0])
            if not oldest <= generation <= current:
                return None
            if generation == current:
                return StoreChanges(current, [], [], [])
            templates = self._rows(
                f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE changed_gen > ? "
                "ORDER BY changed_gen, rowid",
                (generation,),
            )
            removed = self._rows(
                "SELECT template_id FROM template_removals WHERE generation > ? ORDER BY seq",
                (generation,),
            )
            subjects = self._rows(
                "SELECT subject_id FROM subjects WHERE changed_gen > ? UNION "
                "SELECT subject_id FROM consents WHERE changed_gen > ? ORDER BY 1",
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
            f"INSERT INTO subjects ({_SUBJECT_COLUMNS}, changed_gen) VALUES (?, ?, ?, ?, ?, ?)",
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
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE subject_id = ?", (subject_id,)
        )
        return SubjectRecord(*rows[0]) if rows else None

    def get_subjects(self, subject_ids: Sequence[str]) -> list[SubjectRecord]:
        rows = self._rows_in(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE subject_id IN ({{}})", subject_ids
        )
        return [SubjectRecord(*row) for row in rows]

    def list_subjects(self, include_erased: bool = False) -> list[SubjectRecord]:
        where = "" if include_erased else " WHERE erased_at IS NULL"
        rows = self._rows(f"SELECT {_SUBJECT_COLUMNS} FROM subjects{where} ORDER BY rowid")
        return [SubjectRecord(*row) for row in rows]

    def touch_subject(self, subject_id: str, at: str) -> None:
        self._write(
            "UPDATE subjects SET last_interaction_at = ?, changed_gen = ? WHERE subject_id = ?",
            (at, self._change_stamp(), subject_id),
        )

    def mark_subject_erased(self, subject_id: str, at: str) -> None:
        self._write(
            "UPDATE subjects SET erased_at = ?, display_name = NULL, changed_gen = ? "
            "WHERE subject_id = ?",
            (at, self._change_stamp(), subject_id),
        )

    def insert_consent(self, consent: ConsentRecord) -> None:
        self._write(
            f"INSERT INTO consents ({_CONSENT_COLUMNS}, changed_gen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject_id = ? "
            "ORDER BY granted_at, rowid",
            (subject_id,),
        )
        return [_consent(row) for row in rows]

    def consents_of_subjects(self, subject_ids: Sequence[str]) -> list[ConsentRecord]:
        rows = self._rows_in(
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject_id IN ({{}}) ORDER BY rowid",
            subject_ids,
        )
        return [_consent(row) for row in rows]

    def all_consents(self) -> list[ConsentRecord]:
        rows = self._rows(f"SELECT {_CONSENT_COLUMNS} FROM consents ORDER BY rowid")
        return [_consent(row) for row in rows]

    def withdraw_consent(self, consent_id: str, at: str, reason: str) -> None:
        self._write(
            "UPDATE consents SET withdrawn_at = ?, withdrawal_reason = ?, changed_gen = ? "
            "WHERE consent_id = ? AND withdrawn_at IS NULL",
            (at, reason, self._change_stamp(), consent_id),
        )

    def insert_template(self, template: TemplateRecord) -> None:
        self._write(
            f"INSERT INTO templates ({_TEMPLATE_COLUMNS}, changed_gen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE subject_id = ? ORDER BY rowid",
            (subject_id,),
        )
        return [_template(row) for row in rows]

    def all_templates(self) -> list[TemplateRecord]:
        rows = self._rows(f"SELECT {_TEMPLATE_COLUMNS} FROM templates ORDER BY rowid")
        return [_template(row) for row in rows]

    def template_model_ids(self) -> list[str]:
        rows = self._rows("SELECT DISTINCT model_id FROM templates ORDER BY model_id")
        return [str(row[0]) for row in rows]

    def replace_template_ciphertext(self, template_id: str, ciphertext: bytes) -> None:
        self._write(
            "UPDATE templates SET ciphertext = ?, changed_gen = ? WHERE template_id = ?",
            (ciphertext, self._change_stamp(), template_id),
        )

    def insert_photo(self, photo: PhotoRecord) -> None:
        self._write(
            "INSERT INTO photos VALUES (?, ?, ?, ?)",
            (photo.photo_id, photo.subject_id, photo.ciphertext, photo.created_at),
        )

    def photos_of(self, subject_id: str) -> list[PhotoRecord]:
        rows = self._rows("SELECT * FROM photos WHERE subject_id = ? ORDER BY rowid", (subject_id,))
        return [PhotoRecord(row[0], row[1], bytes(row[2]), row[3]) for row in rows]

    def delete_biometrics(self, subject_id: str) -> int:
        self._write(
            "INSERT INTO template_removals (template_id, generation) "
            "SELECT template_id, ? FROM templates WHERE subject_id = ?",
            (self._change_stamp(), subject_id),
        )
        self._prune_removals()
        templates = self._write("DELETE FROM templates WHERE subject_id = ?", (subject_id,))
        photos = self._write("DELETE FROM photos WHERE subject_id = ?", (subject_id,))
        crops = self._write("DELETE FROM probe_crops WHERE subject_id = ?", (subject_id,))
        return int(templates.rowcount + photos.rowcount + crops.rowcount)

    def _prune_removals(self) -> None:
        """Keep the newest ``keep_removals`` tombstones; older readers then reload in full."""
        cutoff = self._rows(
            "SELECT seq, generation FROM template_removals ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (self.keep_removals,),
        )
        if cutoff:
            seq, generation = cutoff[0]
            self._write("DELETE FROM template_removals WHERE seq <= ?", (seq,))
            self._write(
                "UPDATE counters SET value = max(value, ?) WHERE name = 'changes_from'",
                (generation,),
            )

    def insert_event(self, event: EventRecord) -> None:
        self._write(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        rows = self._rows("SELECT * FROM events WHERE event_id = ?", (event_id,))
        return EventRecord(*rows[0]) if rows else None

    def list_events(self) -> list[EventRecord]:
        return [EventRecord(*row) for row in self._rows("SELECT * FROM events ORDER BY event_id")]

    def close_event(self, event_id: str, at: str) -> None:
        self._write("UPDATE events SET closed_at = ? WHERE event_id = ?", (at, event_id))

    def put_event_member(self, member: EventMemberRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO event_members VALUES (?, ?, ?, ?)",
            (member.event_id, member.subject_id, int(member.event_only), member.added_at),
        )

    def remove_event_member(self, event_id: str, subject_id: str) -> bool:
        cursor = self._write(
            "DELETE FROM event_members WHERE event_id = ? AND subject_id = ?",
            (event_id, subject_id),
        )
        return cursor.rowcount > 0

    def event_members(self, event_id: str) -> list[EventMemberRecord]:
        rows = self._rows(
            "SELECT * FROM event_members WHERE event_id = ? ORDER BY subject_id", (event_id,)
        )
        return [EventMemberRecord(e, s, bool(only), at) for e, s, only, at in rows]

    def insert_opt_out(self, opt_out: OptOutRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO event_opt_outs VALUES (?, ?, ?, ?)",
            (opt_out.event_id, opt_out.reference, opt_out.subject_id, opt_out.opted_out_at),
        )

    def opt_outs(self, event_id: str) -> list[OptOutRecord]:
        rows = self._rows(
            "SELECT * FROM event_opt_outs WHERE event_id = ? ORDER BY reference", (event_id,)
        )
        return [OptOutRecord(*row) for row in rows]

    def insert_probe_crop(self, crop: ProbeCropRecord) -> None:
        self._write(
            "INSERT INTO probe_crops VALUES (?, ?, ?, ?, ?, ?)",
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
            rows = self._rows("SELECT * FROM probe_crops ORDER BY created_at")
        else:
            rows = self._rows(
                "SELECT * FROM probe_crops WHERE event_id = ? ORDER BY created_at", (event_id,)
            )
        return [ProbeCropRecord(c, e, s, bytes(b), at, until) for c, e, s, b, at, until in rows]

    def delete_probe_crops(self, crop_ids: list[str]) -> int:
        deleted = 0
        for crop_id in crop_ids:
            deleted += self._write("DELETE FROM probe_crops WHERE crop_id = ?", (crop_id,)).rowcount
        return deleted

    def insert_identification(self, identification: IdentificationRecord) -> None:
        record = identification
        self._write(
            "INSERT INTO identifications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT * FROM identifications WHERE identification_id = ?", (identification_id,)
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
            "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?, ?)",
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
            "SELECT * FROM reviews WHERE identification_id = ? ORDER BY decided_at, rowid",
            (identification_id,),
        )
        return [ReviewRecord(*row) for row in rows]

    def append_audit(self, record: AuditRecord) -> None:
        self._write(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        rows = self._rows("SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1")
        return _audit(rows[0]) if rows else None

    def audit_records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        # Fetched in pages, never left half-read: an open cursor would pin an old snapshot.
        last = after_seq
        while True:
            rows = self._rows(
                "SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT 5000", (last,)
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
            "INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?, ?)",
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


class SqliteKeyStore(_SqliteBase):
    """:class:`~facetrust.store.base.KeyStore` on its own SQLite file.

    Keep this file out of bulk backups of the gallery (or back it up on a short
    rotation): erasing a subject destroys its key here, and only here.
    """

    _kind = "keystore"
    _migrations = KEYSTORE_MIGRATIONS

    def get_key(self, subject_id: str) -> bytes | None:
        rows = self._rows("SELECT wrapped FROM data_keys WHERE subject_id = ?", (subject_id,))
        return bytes(rows[0][0]) if rows else None

    def get_keys(self, subject_ids: Sequence[str]) -> dict[str, bytes]:
        rows = self._rows_in(
            "SELECT subject_id, wrapped FROM data_keys WHERE subject_id IN ({})", subject_ids
        )
        return {str(s): bytes(w) for s, w in rows}

    def put_key(self, subject_id: str, wrapped: bytes) -> None:
        self._write("INSERT OR REPLACE INTO data_keys VALUES (?, ?)", (subject_id, wrapped))

    def delete_key(self, subject_id: str) -> bool:
        cursor = self._write("DELETE FROM data_keys WHERE subject_id = ?", (subject_id,))
        return cursor.rowcount > 0

    def subject_ids(self) -> list[str]:
        return [str(row[0]) for row in self._rows("SELECT subject_id FROM data_keys")]

    def all_keys(self) -> dict[str, bytes]:
        """Every wrapped key by subject id (for bulk loading)."""
        rows = self._rows("SELECT subject_id, wrapped FROM data_keys")
        return {str(s): bytes(w) for s, w in rows}
