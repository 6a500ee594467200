"""The shared SQL of the batch enrolment queue (``enroll-batch --queue``).

Mixed into :class:`~facetrust.store.sql.SqlStore`; the table comes from
:func:`facetrust.store.schema.batch_queue_table`. A claim is one ``UPDATE``
of the rows a sub-select picks: on PostgreSQL the sub-select locks them
``FOR UPDATE SKIP LOCKED``, so concurrent claims never pick the same row nor
wait for each other; SQLite has one writer at a time (``BEGIN IMMEDIATE``),
which gives the same guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import QueuedPhoto
from .sql_base import SqlBase

QUEUE_COLUMNS = (
    "queue, photo, subject_id, state, worker, lease_until, attempts, reason, message, updated_at"
)
ABANDONED = "abandoned"


def queued_from_row(row: tuple[Any, ...]) -> QueuedPhoto:
    """A queued photo from its columns (``QUEUE_COLUMNS`` order)."""
    return QueuedPhoto(
        row[0], row[1], row[2], row[3], row[4], row[5], int(row[6]), row[7], row[8], row[9]
    )


class SqlBatchQueue(SqlBase):
    """Photos of named queues, claimed under a lease by batch enrolment workers."""

    def queue_photos(self, photos: Sequence[QueuedPhoto]) -> int:
        added = 0
        for photo in photos:
            added += int(self._run(
                f"INSERT INTO batch_queue ({QUEUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (queue, photo) DO NOTHING",
                (photo.queue, photo.photo, photo.subject_id, photo.state, photo.worker,
                 photo.lease_until, photo.attempts, photo.reason, photo.message,
                 photo.updated_at),
            ).rowcount)
        return added

    def claim_queued(
        self, queue: str, worker: str, *, now: str, lease_until: str, limit: int,
        max_attempts: int,
    ) -> list[QueuedPhoto]:
        self._run(
            "UPDATE batch_queue SET state = 'failed', reason = ?, message = ?, worker = NULL, "
            "lease_until = NULL, updated_at = ? "
            "WHERE queue = ? AND state = 'claimed' AND lease_until < ? AND attempts >= ?",
            (ABANDONED,
             f"Claimed {max_attempts} times by workers that stopped before finishing it "
             "(killed, or the photo stopped them). Enrol it on its own to see why.",
             now, queue, now, max_attempts),
        )
        # The picked rows are fixed once (a materialized CTE): PostgreSQL could
        # otherwise run an IN (sub-select ... LIMIT) again per row and exceed the limit.
        rows = self._run(
            "WITH picked AS MATERIALIZED (SELECT photo FROM batch_queue WHERE queue = ? "
            "AND (state = 'waiting' OR (state = 'claimed' AND lease_until < ?)) "
            f"ORDER BY subject_id, photo LIMIT ?{self.dialect.skip_locked}) "
            "UPDATE batch_queue SET state = 'claimed', worker = ?, lease_until = ?, "
            "attempts = attempts + 1, updated_at = ? "
            "WHERE queue = ? AND photo IN (SELECT photo FROM picked) "
            f"RETURNING {QUEUE_COLUMNS}",
            (queue, now, limit, worker, lease_until, now, queue),
        ).fetchall()
        return sorted((queued_from_row(r) for r in rows),
                      key=lambda q: (q.subject_id or "", q.photo))

    def finish_queued(
        self, queue: str, photos: Sequence[str], *, state: str, at: str,
        reason: str | None = None, message: str | None = None,
    ) -> int:
        changed = 0
        for photo in photos:
            changed += int(self._run(
                "UPDATE batch_queue SET state = ?, reason = ?, message = ?, lease_until = NULL, "
                "updated_at = ? WHERE queue = ? AND photo = ? AND state != 'done'",
                (state, reason, message, at, queue, photo),
            ).rowcount)
        return changed

    def requeue_failed(
        self, queue: str, subjects: Mapping[str, str], *, reason: str, at: str
    ) -> int:
        changed = 0
        for photo, subject_id in subjects.items():
            changed += int(self._run(
                "UPDATE batch_queue SET state = 'waiting', subject_id = ?, worker = NULL, "
                "lease_until = NULL, attempts = 0, reason = NULL, message = NULL, "
                "updated_at = ? WHERE queue = ? AND photo = ? AND state = 'failed' "
                "AND reason = ?",
                (subject_id, at, queue, photo, reason),
            ).rowcount)
        return changed

    def drop_failed(self, queue: str, photos: Sequence[str], *, reason: str) -> int:
        dropped = 0
        for photo in photos:
            dropped += int(self._run(
                "DELETE FROM batch_queue WHERE queue = ? AND photo = ? AND state = 'failed' "
                "AND reason = ?",
                (queue, photo, reason),
            ).rowcount)
        return dropped

    def release_claims(self, queue: str, worker: str, *, at: str) -> int:
        return int(self._run(
            "UPDATE batch_queue SET state = 'waiting', worker = NULL, lease_until = NULL, "
            "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = ? "
            "WHERE queue = ? AND worker = ? AND state = 'claimed'",
            (at, queue, worker),
        ).rowcount)

    def queued(self, queue: str, state: str | None = None) -> list[QueuedPhoto]:
        where = "queue = ?" + (" AND state = ?" if state is not None else "")
        params: tuple[str, ...] = (queue, state) if state is not None else (queue,)
        return [
            queued_from_row(r)
            for r in self._read(
                f"SELECT {QUEUE_COLUMNS} FROM batch_queue WHERE {where} "
                "ORDER BY subject_id, photo",
                params,
            )
        ]

    def queue_names(self) -> list[str]:
        return [str(r[0]) for r in self._read(
            "SELECT DISTINCT queue FROM batch_queue ORDER BY queue"
        )]

    def forget_queued(self, subject_id: str) -> int:
        """Delete the queue rows of ``subject_id`` (their photo paths may name the person)."""
        return int(
            self._run("DELETE FROM batch_queue WHERE subject_id = ?", (subject_id,)).rowcount
        )
