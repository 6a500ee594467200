"""The shared SQL of a gallery's records beside its biometric data: events
(gate galleries), their members, opt-outs and probe crops, identifications,
reviews and the audit log. Mixed into :class:`~facetrust.store.sql.SqlStore`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .base import (
    AuditHead,
    AuditRecord,
    EventMemberRecord,
    EventRecord,
    IdentificationRecord,
    OptOutRecord,
    PendingProbeRecord,
    ProbeCropRecord,
    ReviewRecord,
)
from .sql_base import (
    AUDIT_COLUMNS,
    CROP_COLUMNS,
    EVENT_COLUMNS,
    IDENTIFICATION_COLUMNS,
    REVIEW_COLUMNS,
    SqlBase,
    audit_from_row,
)


def identification_from_row(row: Sequence[Any]) -> IdentificationRecord:
    """An :class:`IdentificationRecord` from a row of ``IDENTIFICATION_COLUMNS``."""
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
        review_quorum=None if row[11] is None else int(row[11]),
    )


def _like_literal(text: str) -> str:
    """``text`` as a LIKE pattern matching itself only (escape character ``!``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


class SqlRecords(SqlBase):
    """Events, identifications, reviews and the audit log, in shared SQL."""

    def insert_event(self, event: EventRecord) -> None:
        self._run(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?", (event_id,))
        return EventRecord(*rows[0]) if rows else None

    def list_events(self) -> list[EventRecord]:
        rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY event_id")
        return [EventRecord(*row) for row in rows]

    def close_event(self, event_id: str, at: str) -> None:
        self._run("UPDATE events SET closed_at = ? WHERE event_id = ?", (at, event_id))
        self.bump_generation()  # who a search not naming its subjects may see changes

    def put_event_member(self, member: EventMemberRecord) -> None:
        self._run(
            self.dialect.upsert(
                "event_members",
                ("event_id", "subject_id", "event_only", "added_at"),
                ("event_id", "subject_id"),
            ),
            (member.event_id, member.subject_id, bool(member.event_only), member.added_at),
        )
        self.bump_generation()

    def remove_event_member(self, event_id: str, subject_id: str) -> bool:
        cursor = self._run(
            "DELETE FROM event_members WHERE event_id = ? AND subject_id = ?",
            (event_id, subject_id),
        )
        self.bump_generation()
        return cursor.rowcount > 0

    def event_members(self, event_id: str) -> list[EventMemberRecord]:
        rows = self._read(
            "SELECT event_id, subject_id, event_only, added_at FROM event_members "
            "WHERE event_id = ? ORDER BY subject_id",
            (event_id,),
        )
        return [EventMemberRecord(e, s, bool(only), at) for e, s, only, at in rows]

    def insert_opt_out(self, opt_out: OptOutRecord) -> None:
        # A plain insert: an opt-out is never overwritten (a second one with the
        # same reference fails on the primary key instead of dropping a subject).
        self._run(
            "INSERT INTO event_opt_outs (event_id, reference, subject_id, opted_out_at) "
            "VALUES (?, ?, ?, ?)",
            (opt_out.event_id, opt_out.reference, opt_out.subject_id, opt_out.opted_out_at),
        )

    def opt_outs(self, event_id: str) -> list[OptOutRecord]:
        rows = self._read(
            "SELECT event_id, reference, subject_id, opted_out_at FROM event_opt_outs "
            "WHERE event_id = ? ORDER BY reference",
            (event_id,),
        )
        return [OptOutRecord(*row) for row in rows]

    def insert_probe_crop(self, crop: ProbeCropRecord) -> None:
        self._run(
            f"INSERT INTO probe_crops ({CROP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
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
            rows = self._read(
                f"SELECT {CROP_COLUMNS} FROM probe_crops ORDER BY created_at, crop_id"
            )
        else:
            rows = self._read(
                f"SELECT {CROP_COLUMNS} FROM probe_crops WHERE event_id = ? "
                "ORDER BY created_at, crop_id",
                (event_id,),
            )
        return [ProbeCropRecord(c, e, s, bytes(b), at, until) for c, e, s, b, at, until in rows]

    def delete_probe_crops(self, crop_ids: list[str]) -> int:
        deleted = 0
        for crop_id in dict.fromkeys(crop_ids):
            deleted += self._run("DELETE FROM probe_crops WHERE crop_id = ?", (crop_id,)).rowcount
        return deleted

    # identifications ---------------------------------------------------------
    def insert_identification(self, identification: IdentificationRecord) -> None:
        record = identification
        self._run(
            f"INSERT INTO identifications ({IDENTIFICATION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                record.review_quorum,
            ),
        )

    def get_identification(self, identification_id: str) -> IdentificationRecord | None:
        rows = self._read(
            f"SELECT {IDENTIFICATION_COLUMNS} FROM identifications WHERE identification_id = ?",
            (identification_id,),
        )
        return identification_from_row(rows[0]) if rows else None

    def undecided_identifications(
        self, after: tuple[str, str] | None = None, limit: int = 100,
        naming: str | None = None,
    ) -> list[IdentificationRecord]:
        started, last_id = after or ("", "")
        # The candidates column is JSON text, each subject id a JSON string: the
        # quoted id matches that id only, as ids hold no quote or backslash.
        named = "" if naming is None else "AND candidates LIKE ? ESCAPE '!' "
        pattern = () if naming is None else ("%" + _like_literal(json.dumps(naming)) + "%",)
        rows = self._read(
            f"SELECT {IDENTIFICATION_COLUMNS} FROM identifications WHERE decided_at IS NULL "
            "AND (started_at > ? OR (started_at = ? AND identification_id > ?)) "
            f"{named}ORDER BY started_at, identification_id LIMIT ?",
            (started, started, last_id, *pattern, limit),
        )
        return [identification_from_row(row) for row in rows]

    def mark_identification_decided(self, identification_id: str, at: str) -> None:
        self._run(
            "UPDATE identifications SET decided_at = ? WHERE identification_id = ? "
            "AND decided_at IS NULL",
            (at, identification_id),
        )

    def identification_decided_at(self, identification_id: str) -> str | None:
        rows = self._read(
            "SELECT decided_at FROM identifications WHERE identification_id = ?",
            (identification_id,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def close_identification(
        self, identification_id: str, at: str, ineligible: Mapping[str, str]
    ) -> bool:
        cursor = self._run(
            "UPDATE identifications SET decided_at = ?, closed_because = ? "
            "WHERE identification_id = ? AND decided_at IS NULL",
            (at, json.dumps(dict(ineligible), sort_keys=True), identification_id),
        )
        return cursor.rowcount > 0

    def identification_closure(self, identification_id: str) -> dict[str, str] | None:
        rows = self._read(
            "SELECT closed_because FROM identifications WHERE identification_id = ?",
            (identification_id,),
        )
        if not rows or rows[0][0] is None:
            return None
        return {str(k): str(v) for k, v in json.loads(rows[0][0]).items()}

    def insert_pending_probe(self, probe: PendingProbeRecord) -> None:
        self._run(
            "INSERT INTO pending_probes (identification_id, ciphertext, created_at, delete_after) "
            "VALUES (?, ?, ?, ?)",
            (probe.identification_id, probe.ciphertext, probe.created_at, probe.delete_after),
        )

    def get_pending_probe(self, identification_id: str) -> PendingProbeRecord | None:
        rows = self._read(
            "SELECT identification_id, ciphertext, created_at, delete_after FROM pending_probes "
            "WHERE identification_id = ?",
            (identification_id,),
        )
        if not rows:
            return None
        found, ciphertext, created, until = rows[0]
        return PendingProbeRecord(found, bytes(ciphertext), created, until)

    def pending_probes_due(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT identification_id FROM pending_probes WHERE delete_after <= ? "
            "ORDER BY delete_after, identification_id",
            (now,),
        )
        return [str(row[0]) for row in rows]

    def pending_probe_ids(self) -> list[str]:
        rows = self._read("SELECT identification_id FROM pending_probes ORDER BY identification_id")
        return [str(row[0]) for row in rows]

    def delete_pending_probe(self, identification_id: str) -> bool:
        cursor = self._run(
            "DELETE FROM pending_probes WHERE identification_id = ?", (identification_id,)
        )
        return cursor.rowcount > 0

    def insert_review(self, review: ReviewRecord) -> None:
        self._run(
            self.dialect.upsert(
                "reviews",
                tuple(REVIEW_COLUMNS.split(", ")),
                ("identification_id", "subject_id", "reviewer"),
            ),
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
        rows = self._read(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE identification_id = ? "
            "ORDER BY decided_at, {ord}",
            (identification_id,),
        )
        return [ReviewRecord(*row) for row in rows]

    def page_reviews(
        self, after: tuple[str, str, str] | None = None, limit: int = 1000
    ) -> list[ReviewRecord]:
        identification, subject, reviewer = after or ("", "", "")
        rows = self._read(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE identification_id > ? OR "
            "(identification_id = ? AND (subject_id > ? OR (subject_id = ? AND reviewer > ?))) "
            "ORDER BY identification_id, subject_id, reviewer LIMIT ?",
            (identification, identification, subject, subject, reviewer, limit),
        )
        return [ReviewRecord(*row) for row in rows]

    # audit log -------------------------------------------------------------
    def append_audit(self, record: AuditRecord) -> None:
        self._run(
            f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        rows = self._read(f"SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT 1")
        return audit_from_row(rows[0]) if rows else None

    def audit_records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        # Fetched in pages, never left half-read: an open cursor would pin an old snapshot.
        last = after_seq
        while True:
            rows = self._read(
                f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT 5000",
                (last,),
            )
            if not rows:
                return
            for row in rows:
                yield audit_from_row(row)
            last = int(rows[-1][0])

    def get_audit_head(self) -> AuditHead | None:
        rows = self._read("SELECT seq, mac, head_mac FROM audit_head WHERE id = 1")
        return AuditHead(int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def set_audit_head(self, head: AuditHead) -> None:
        self._run(
            self.dialect.upsert("audit_head", ("id", "seq", "mac", "head_mac"), ("id",)),
            (1, head.seq, head.mac, head.head_mac),
        )
