"""The SQL shared by the SQLite and PostgreSQL stores, and the dialect that tells them apart.

:class:`SqlStore` and :class:`SqlKeyStore` implement every method of
:class:`~facetrust.store.base.Store` and :class:`~facetrust.store.base.KeyStore`
once, in SQL both databases accept, over two primitives each backend provides
(``_write`` inside a transaction, ``_rows`` for reads). What differs is a
:class:`Dialect`: the parameter placeholder (``?`` or ``%s``), the column that
keeps insertion order (SQLite's ``rowid``, PostgreSQL's identity column
``ord``), the upsert syntax, how a list parameter is passed (chunked ``IN``
lists or one array with ``= ANY``) and a function name. The backends keep what
is really theirs: connections, transactions and locks, migrations, ``VACUUM``
or ``secure_delete``, and PostgreSQL's in-database search.

Statements are written with ``?`` placeholders and ``{ord}`` for the order
column; :meth:`Dialect.render` turns them into the backend's SQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from .base import (
    ConsentRecord,
    EligibilityColumns,
    PhotoRecord,
    StoreChanges,
    SubjectRecord,
    TemplateRecord,
)
from .sql_base import (
    CONSENT_COLUMNS,
    POSTGRES,
    SQLITE,
    SUBJECT_COLUMNS,
    TEMPLATE_COLUMNS,
    Dialect,
    SqlBase,
    consent_from_row,
    parse_purposes,
    template_from_row,
)
from .sql_idempotency import SqlIdempotency
from .sql_queue import SqlBatchQueue
from .sql_records import SqlRecords

__all__ = ["POSTGRES", "SQLITE", "Dialect", "SqlKeyStore", "SqlStore"]


class SqlStore(SqlRecords, SqlIdempotency, SqlBatchQueue):
    """Every :class:`~facetrust.store.base.Store` method, in shared SQL (see module docstring).

    The backend counts open transactions and snapshots in ``_depth`` and
    resets ``_stamp`` to None when a transaction starts.
    """

    keep_removals = 100_000
    _stamp: int | None
    _depth: int
    _writing: bool

    def in_transaction(self) -> bool:
        return self._writing

    # gallery-wide values ---------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._run(self.dialect.upsert("meta", ("name", "value"), ("name",)), (name, value))

    def get_secret(self, name: str) -> bytes | None:
        rows = self._read("SELECT wrapped FROM secrets WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def put_secret(self, name: str, wrapped: bytes) -> None:
        self._run(self.dialect.upsert("secrets", ("name", "wrapped"), ("name",)), (name, wrapped))

    # change tracking ---------------------------------------------------------
    def generation(self) -> int:
        if self._depth:
            self._stamp = None  # a write after this read must move the counter again
        return int(self._read("SELECT value FROM counters WHERE name = 'generation'")[0][0])

    def bump_generation(self) -> None:
        self._change_stamp()

    def _change_stamp(self) -> int:
        """The generation this transaction's changes are stamped with (moves the counter once).

        On PostgreSQL the UPDATE also takes the counter's row lock until commit;
        with the write lock each backend takes when a transaction starts,
        writers stamp in commit order.
        """
        if self._stamp is None:
            rows = self._run(
                "UPDATE counters SET value = value + 1 WHERE name = 'generation' RETURNING value"
            ).fetchall()
            self._stamp = int(rows[0][0])
        return self._stamp

    def changes_since(self, generation: int) -> StoreChanges | None:
        with self.snapshot():
            current = self.generation()
            oldest = int(self._read("SELECT value FROM counters WHERE name = 'changes_from'")[0][0])
            if not oldest <= generation <= current:
                return None
            if generation == current:
                return StoreChanges(current, [], [], [])
            templates = self._read(
                f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE changed_gen > ? "
                "ORDER BY changed_gen, {ord}",
                (generation,),
            )
            removed = self._read(
                "SELECT template_id FROM template_removals WHERE generation > ? "
                "ORDER BY generation",
                (generation,),
            )
            # two indexed range reads: a UNION would let SQLite scan both tables
            subjects = self._read(
                "SELECT subject_id FROM subjects WHERE changed_gen > ?", (generation,)
            )
            subjects += self._read(
                "SELECT subject_id FROM consents WHERE changed_gen > ?", (generation,)
            )
        return StoreChanges(
            current,
            [template_from_row(row) for row in templates],
            list(dict.fromkeys(str(row[0]) for row in removed)),
            sorted({str(row[0]) for row in subjects}),
        )

    def _prune_removals(self) -> None:
        """Keep the newest ``keep_removals`` tombstones; older readers then reload in full."""
        cutoff = self._read(
            "SELECT seq, generation FROM template_removals ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (self.keep_removals,),
        )
        if cutoff:
            seq, generation = cutoff[0]
            self._run("DELETE FROM template_removals WHERE seq <= ?", (seq,))
            self._run(
                f"UPDATE counters SET value = {self.dialect.greatest}(value, ?) "
                "WHERE name = 'changes_from'",
                (generation,),
            )

    # subjects and consents -------------------------------------------------
    def insert_subject(self, subject: SubjectRecord) -> None:
        if self.get_subject(subject.subject_id) is not None:
            raise StoreError(
                f"A subject with id {subject.subject_id!r} already exists (or was erased; "
                "erased ids are never reused). Choose another id."
            )
        self._run(
            f"INSERT INTO subjects ({SUBJECT_COLUMNS}, changed_gen) VALUES (?, ?, ?, ?, ?, ?)",
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
        rows = self._read(
            f"SELECT {SUBJECT_COLUMNS} FROM subjects WHERE subject_id = ?", (subject_id,)
        )
        return SubjectRecord(*rows[0]) if rows else None

    def get_subjects(self, subject_ids: Sequence[str]) -> list[SubjectRecord]:
        rows = self._read_in(
            f"SELECT {SUBJECT_COLUMNS} FROM subjects WHERE {{in}} ORDER BY {{ord}}",
            "subject_id",
            subject_ids,
        )
        return [SubjectRecord(*row) for row in rows]

    def list_subjects(self, include_erased: bool = False) -> list[SubjectRecord]:
        where = "" if include_erased else " WHERE erased_at IS NULL"
        rows = self._read(f"SELECT {SUBJECT_COLUMNS} FROM subjects{where} ORDER BY {{ord}}")
        return [SubjectRecord(*row) for row in rows]

    def page_subjects(
        self, *, after: str | None = None, limit: int = 50, contains: str | None = None
    ) -> list[SubjectRecord]:
        where, params = ["erased_at IS NULL"], []
        if after is not None:
            where.append("subject_id > ?")
            params.append(after)
        if contains:
            # '!' escapes LIKE's wildcards, so a typed '%' or '_' matches itself
            escaped = "".join(f"!{c}" if c in "!%_" else c for c in contains.lower())
            where.append("(LOWER(subject_id) LIKE ? ESCAPE '!' "
                         "OR LOWER(display_name) LIKE ? ESCAPE '!')")
            params += [f"%{escaped}%"] * 2
        rows = self._read(
            f"SELECT {SUBJECT_COLUMNS} FROM subjects WHERE {' AND '.join(where)} "
            "ORDER BY subject_id LIMIT ?",
            (*params, limit),
        )
        return [SubjectRecord(*row) for row in rows]

    def touch_subject(self, subject_id: str, at: str) -> None:
        self._run(
            "UPDATE subjects SET last_interaction_at = ?, changed_gen = ? WHERE subject_id = ?",
            (at, self._change_stamp(), subject_id),
        )

    def mark_subject_erased(self, subject_id: str, at: str) -> None:
        self._run(
            "UPDATE subjects SET erased_at = ?, display_name = NULL, changed_gen = ? "
            "WHERE subject_id = ?",
            (at, self._change_stamp(), subject_id),
        )
        self.forget_idempotency(subject_id)  # stored responses about the subject go with it
        self.forget_queued(subject_id)  # batch queue rows name its photos

    def remove_display_name(self, subject_id: str) -> None:
        self._run(
            "UPDATE subjects SET display_name = NULL, changed_gen = ? WHERE subject_id = ?",
            (self._change_stamp(), subject_id),
        )
        self.forget_idempotency(subject_id)  # a stored response may show the name

    def insert_consent(self, consent: ConsentRecord) -> None:
        self._run(
            f"INSERT INTO consents ({CONSENT_COLUMNS}, changed_gen) "
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
        rows = self._read(
            f"SELECT {CONSENT_COLUMNS} FROM consents WHERE subject_id = ? "
            "ORDER BY granted_at, {ord}",
            (subject_id,),
        )
        return [consent_from_row(row) for row in rows]

    def consents_of_subjects(self, subject_ids: Sequence[str]) -> list[ConsentRecord]:
        rows = self._read_in(
            f"SELECT {CONSENT_COLUMNS} FROM consents WHERE {{in}} ORDER BY {{ord}}",
            "subject_id",
            subject_ids,
        )
        return [consent_from_row(row) for row in rows]

    def all_consents(self) -> list[ConsentRecord]:
        rows = self._read(f"SELECT {CONSENT_COLUMNS} FROM consents ORDER BY {{ord}}")
        return [consent_from_row(row) for row in rows]

    def eligibility_columns(self) -> EligibilityColumns:
        # each read's rows are let go once turned into columns, before the next read
        subject_ids, last_interaction = _columns(self._read(
            "SELECT subject_id, last_interaction_at FROM subjects WHERE erased_at IS NULL"
        ), 2)
        consent_subjects, purposes, expires = _columns(self._read(
            "SELECT subject_id, purposes, expires_at FROM consents WHERE withdrawn_at IS NULL"
        ), 3)
        return EligibilityColumns(
            subject_ids,
            last_interaction,
            consent_subjects,
            [parse_purposes(p) for p in purposes],
            expires,
        )

    def withdraw_consent(self, consent_id: str, at: str, reason: str) -> None:
        self._run(
            "UPDATE consents SET withdrawn_at = ?, withdrawal_reason = ?, changed_gen = ? "
            "WHERE consent_id = ? AND withdrawn_at IS NULL",
            (at, reason, self._change_stamp(), consent_id),
        )

    # biometric data ----------------------------------------------------------
    def insert_template(self, template: TemplateRecord) -> None:
        self._run(
            f"INSERT INTO templates ({TEMPLATE_COLUMNS}, changed_gen) "
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
        rows = self._read(
            f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE subject_id = ? ORDER BY {{ord}}",
            (subject_id,),
        )
        return [template_from_row(row) for row in rows]

    def all_templates(self) -> list[TemplateRecord]:
        rows = self._read(f"SELECT {TEMPLATE_COLUMNS} FROM templates ORDER BY {{ord}}")
        return [template_from_row(row) for row in rows]

    def template_model_ids(self) -> list[str]:
        rows = self._read("SELECT DISTINCT model_id FROM templates ORDER BY model_id")
        return [str(row[0]) for row in rows]

    def template_ids_through(self, model_id: str, generation: int) -> list[str]:
        rows = self._read(
            "SELECT template_id FROM templates WHERE model_id = ? AND changed_gen <= ?",
            (model_id, generation),
        )
        return _columns(rows, 1)[0]

    def replace_template_ciphertext(self, template_id: str, ciphertext: bytes) -> None:
        self._run(
            "UPDATE templates SET ciphertext = ?, changed_gen = ? WHERE template_id = ?",
            (ciphertext, self._change_stamp(), template_id),
        )

    def insert_photo(self, photo: PhotoRecord) -> None:
        self._run(
            "INSERT INTO photos (photo_id, subject_id, ciphertext, created_at) VALUES (?, ?, ?, ?)",
            (photo.photo_id, photo.subject_id, photo.ciphertext, photo.created_at),
        )

    def subjects_with_biometrics(self, subject_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for table in ("templates", "photos"):
            rows = self._read_in(
                f"SELECT DISTINCT subject_id FROM {table} WHERE {{in}}", "subject_id", subject_ids
            )
            found.update(str(row[0]) for row in rows)
        return found

    def photos_of(self, subject_id: str) -> list[PhotoRecord]:
        rows = self._read(
            "SELECT photo_id, subject_id, ciphertext, created_at FROM photos "
            "WHERE subject_id = ? ORDER BY {ord}",
            (subject_id,),
        )
        return [PhotoRecord(row[0], row[1], bytes(row[2]), row[3]) for row in rows]

    def delete_biometrics(self, subject_id: str) -> int:
        self._run(
            "INSERT INTO template_removals (template_id, generation) "
            "SELECT template_id, ? FROM templates WHERE subject_id = ?",
            (self._change_stamp(), subject_id),
        )
        self._prune_removals()
        # on PostgreSQL, template_vectors rows go with their templates (ON DELETE CASCADE)
        templates = self._run("DELETE FROM templates WHERE subject_id = ?", (subject_id,))
        photos = self._run("DELETE FROM photos WHERE subject_id = ?", (subject_id,))
        crops = self._run("DELETE FROM probe_crops WHERE subject_id = ?", (subject_id,))
        self.forget_idempotency(subject_id, biometric_only=True)  # e.g. an enrolment's face
        return int(templates.rowcount + photos.rowcount + crops.rowcount)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """``rows`` (each of ``width`` values) turned into ``width`` lists, one per column."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


class SqlKeyStore(SqlBase):
    """Every :class:`~facetrust.store.base.KeyStore` method, in shared SQL."""

    def get_key(self, subject_id: str) -> bytes | None:
        rows = self._read("SELECT wrapped FROM data_keys WHERE subject_id = ?", (subject_id,))
        return bytes(rows[0][0]) if rows else None

    def get_keys(self, subject_ids: Sequence[str]) -> dict[str, bytes]:
        rows = self._read_in(
            "SELECT subject_id, wrapped FROM data_keys WHERE {in}", "subject_id", subject_ids
        )
        return {str(s): bytes(w) for s, w in rows}

    def put_key(self, subject_id: str, wrapped: bytes) -> None:
        self._run(
            self.dialect.upsert("data_keys", ("subject_id", "wrapped"), ("subject_id",)),
            (subject_id, wrapped),
        )

    def add_key(self, subject_id: str, wrapped: bytes, *, created_at: str) -> None:
        self._write_now(
            self.dialect.render(
                "INSERT INTO data_keys (subject_id, wrapped, created_at) VALUES (?, ?, ?)"
            ),
            (subject_id, wrapped, created_at),
        )

    def delete_key(self, subject_id: str) -> bool:
        cursor = self._run("DELETE FROM data_keys WHERE subject_id = ?", (subject_id,))
        return cursor.rowcount > 0

    def subject_ids(self) -> list[str]:
        return [str(row[0]) for row in self._read("SELECT subject_id FROM data_keys")]

    def names_starting(self, prefix: str) -> list[str]:
        return list(self.made_at(prefix))

    def made_at(
        self, prefix: str, *, after: str | None = None, limit: int | None = None
    ) -> dict[str, str | None]:
        # substr, not LIKE: exact and case-sensitive on both databases, no wildcards to escape
        sql = "SELECT subject_id, created_at FROM data_keys WHERE substr(subject_id, 1, ?) = ?"
        params: list[Any] = [len(prefix), prefix]
        if after is not None:
            sql += " AND subject_id > ?"
            params.append(after)
        if limit is not None:
            sql += " ORDER BY subject_id LIMIT ?"
            params.append(limit)
        rows = self._read(sql, params)
        return {str(name): None if made is None else str(made) for name, made in rows}

    def all_keys(self) -> dict[str, bytes]:
        """Every wrapped key by subject id (for bulk loading and key rotation)."""
        rows = self._read("SELECT subject_id, wrapped FROM data_keys")
        return {str(s): bytes(w) for s, w in rows}
