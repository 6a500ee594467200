"""The dialect that tells the SQLite and PostgreSQL stores apart, and their shared primitives.

See :mod:`facetrust.store.sql` for how the stores are put together.
Statements are written with ``?`` placeholders and ``{ord}`` for the column
that keeps insertion order; :meth:`Dialect.render` turns them into the
backend's SQL.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .base import AuditRecord, ConsentRecord, TemplateRecord

SUBJECT_COLUMNS = "subject_id, display_name, created_at, last_interaction_at, erased_at"
CONSENT_COLUMNS = (
    "consent_id, subject_id, purposes, granted_at, expires_at, evidence_ref, evidence_sha256, "
    "notice_version, withdrawn_at, withdrawal_reason"
)
TEMPLATE_COLUMNS = "template_id, subject_id, model_id, ciphertext, created_at, source_digest"
AUDIT_COLUMNS = "seq, recorded_at, kind, actor, purpose, subject_ids, body, prev_mac, mac"
EVENT_COLUMNS = (
    "event_id, purpose, valid_from, valid_to, operating_point, created_at, created_by, closed_at"
)
IDENTIFICATION_COLUMNS = (
    "identification_id, purpose, actor, case_ref, probe_sha256, model_id, operating_point, "
    "threshold, started_at, ended_at, candidates, review_quorum"
)
REVIEW_COLUMNS = "identification_id, subject_id, reviewer, decision, decided_at, note"
CROP_COLUMNS = "crop_id, event_id, subject_id, ciphertext, created_at, delete_after"


@dataclass(frozen=True)
class Dialect:
    """What the shared statements need to know about one database."""

    name: str
    #: The parameter placeholder of the driver.
    placeholder: str
    #: The column that keeps insertion order.
    order_column: str
    #: Whether a list parameter is passed as one array (``= ANY(?)``), else as chunked IN lists.
    array_parameters: bool
    #: The name of the two-argument maximum function.
    greatest: str
    #: Most placeholders in one chunked IN list.
    chunk: int = 500
    #: What a ``SELECT`` ends with to lock the rows it reads, skipping rows others
    #: hold ("" where a write transaction already locks the whole database).
    skip_locked: str = ""

    def render(self, sql: str) -> str:
        """``sql`` written with ``?`` and ``{ord}``, in this database's words."""
        return sql.replace("{ord}", self.order_column).replace("?", self.placeholder)

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """An insert that updates ``columns`` of the row with the same ``key`` (``?``
        placeholders). Columns not named keep their values, on both databases (SQLite's
        ``INSERT OR REPLACE`` would reset them and give the row a new rowid)."""
        names, values = ", ".join(columns), ", ".join("?" * len(columns))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        return (
            f"INSERT INTO {table} ({names}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        )


SQLITE = Dialect("sqlite", "?", "rowid", array_parameters=False, greatest="max")
POSTGRES = Dialect(
    "postgresql", "%s", "ord", array_parameters=True, greatest="greatest",
    skip_locked=" FOR UPDATE SKIP LOCKED",
)


class Cursor(Protocol):
    """What the shared statements use of a driver's cursor."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...


class SqlBase:
    """The two primitives each backend provides, and reads by a list of values."""

    dialect: Dialect

    if TYPE_CHECKING:  # provided by the backend this is mixed into

        def _write(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
        def _write_now(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
        def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
        def snapshot(self) -> Any: ...
        def bump_generation(self) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement in the database's own SQL (``?`` or ``%s``
        placeholders), for tools, benchmarks and tests that inspect the store."""
        return self._rows(sql, params)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """A write, ``sql`` in the shared notation."""
        return self._write(self.dialect.render(sql), params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read, ``sql`` in the shared notation."""
        return self._rows(self.dialect.render(sql), params)

    def _read_in(self, sql: str, column: str, values: Sequence[str]) -> list[tuple[Any, ...]]:
        """``sql`` with ``{in}`` standing for "``column`` is one of ``values``"."""
        unique = list(dict.fromkeys(values))
        if self.dialect.array_parameters:
            return self._read(sql.replace("{in}", f"{column} = ANY(?)"), (unique,))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(unique), self.dialect.chunk):
            chunk = unique[start : start + self.dialect.chunk]
            test = f"{column} IN ({', '.join('?' * len(chunk))})"
            rows += self._read(sql.replace("{in}", test), tuple(chunk))
        return rows


@functools.lru_cache(maxsize=1024)
def parse_purposes(text: str) -> tuple[str, ...]:
    """A consent's stored purpose list (JSON); cached, as a gallery has few distinct lists
    and reading a million consents (a cold start) would otherwise parse each one."""
    return tuple(json.loads(text))


def consent_from_row(row: tuple[Any, ...]) -> ConsentRecord:
    """A consent from its columns (``CONSENT_COLUMNS`` order)."""
    return ConsentRecord(row[0], row[1], parse_purposes(row[2]), *row[3:])


def template_from_row(row: tuple[Any, ...]) -> TemplateRecord:
    """A template from its columns (``TEMPLATE_COLUMNS`` order)."""
    return TemplateRecord(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])


def audit_from_row(row: tuple[Any, ...]) -> AuditRecord:
    """An audit event from its columns (``AUDIT_COLUMNS`` order)."""
    return AuditRecord(
        int(row[0]), row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), *row[6:]
    )
