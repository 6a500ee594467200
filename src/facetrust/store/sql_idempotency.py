"""The shared SQL of stored responses to keyed requests (``Idempotency-Key``).

Mixed into :class:`~facetrust.store.sql.SqlStore`; the table comes from
:func:`facetrust.store.schema.idempotency_table`.
"""

from __future__ import annotations

from .base import IdempotencyRecord
from .sql_base import SqlBase

IDEMPOTENCY_COLUMNS = (
    "principal, idempotency_key, request_sha256, status, response, subject_id, biometric, "
    "created_at, expires_at"
)


class SqlIdempotency(SqlBase):
    """Stored responses by (principal, key), purged when they expire or their subject goes."""

    def get_idempotency(self, principal: str, key: str) -> IdempotencyRecord | None:
        rows = self._read(
            f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys "
            "WHERE principal = ? AND idempotency_key = ?",
            (principal, key),
        )
        if not rows:
            return None
        row = rows[0]
        return IdempotencyRecord(
            row[0], row[1], row[2], int(row[3]), row[4], row[5], bool(row[6]), row[7], row[8]
        )

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        self._run(
            f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.principal,
                record.key,
                record.request_sha256,
                record.status,
                record.response,
                record.subject_id,
                record.biometric,
                record.created_at,
                record.expires_at,
            ),
        )

    def purge_idempotency(self, now: str) -> int:
        return int(
            self._run("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)).rowcount
        )

    def forget_idempotency(self, subject_id: str, *, biometric_only: bool = False) -> int:
        """Delete the stored responses about ``subject_id`` (only biometric ones if asked)."""
        where = "subject_id = ?" + (" AND biometric = ?" if biometric_only else "")
        params: tuple[object, ...] = (subject_id, True) if biometric_only else (subject_id,)
        return int(self._run(f"DELETE FROM idempotency_keys WHERE {where}", params).rowcount)
