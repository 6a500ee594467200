"""Versioned SQLite schemas of the gallery and the key store.

Each list entry is one migration; its index + 1 is the schema version it
brings the file to. Never edit a released entry: append a new one. The tables
are written once for both databases in :mod:`.schema`; the append-only
triggers of the audit log are SQLite's own.
"""

from __future__ import annotations

from .schema import (
    SQLITE_TYPES,
    audit_head_table,
    batch_queue_table,
    change_tracking,
    event_tables,
    gallery_tables,
    idempotency_table,
    identification_closure_column,
    identification_quorum_column,
    key_creation_time,
    keystore_tables,
    pending_probe_tables,
    source_digest_column,
)

#: The quorum of each identification made before migration 9, from its ``identify``
#: audit event (which has recorded ``review_quorum`` since the first release), through
#: an indexed temporary table: one pass over the log, not one per identification.
_RECORDED_QUORUMS = """
    CREATE TEMP TABLE recorded_quorums AS
        SELECT json_extract(body, '$.identification_id') AS identification_id,
               CAST(json_extract(body, '$.review_quorum') AS INTEGER) AS quorum
        FROM audit_events WHERE kind = 'identify';
    CREATE INDEX temp.recorded_quorums_by_id ON recorded_quorums(identification_id);
    UPDATE identifications SET review_quorum = (
        SELECT q.quorum FROM recorded_quorums q
        WHERE q.identification_id = identifications.identification_id);
    DROP TABLE temp.recorded_quorums;
"""

_APPEND_ONLY = """
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

GALLERY_MIGRATIONS: list[str] = [
    gallery_tables(SQLITE_TYPES) + _APPEND_ONLY + audit_head_table(SQLITE_TYPES),
    # 2: event galleries (gate), opt-outs and kept probe crops.
    event_tables(SQLITE_TYPES),
    # 3: a keyed digest of the photo each template came from, so a batch
    # enrolment re-run recognises photos already enrolled (deleted with the template).
    source_digest_column(),
    # 4: change tracking (Store.changes_since).
    change_tracking(SQLITE_TYPES),
    # 5: stored responses of keyed requests (Idempotency-Key).
    idempotency_table(SQLITE_TYPES),
    # 6: probes of identifications awaiting review, sealed, and their decision time.
    pending_probe_tables(SQLITE_TYPES),
    # 7: the shared work queue of batch enrolment workers (enroll-batch --queue).
    batch_queue_table(SQLITE_TYPES),
    # 8: why an identification was closed undecided (no candidate eligible any more).
    identification_closure_column(),
    # 9: the review quorum each identification is decided by (filled from the log).
    identification_quorum_column() + _RECORDED_QUORUMS,
]

KEYSTORE_MIGRATIONS: list[str] = [
    keystore_tables(SQLITE_TYPES),
    # 2: when each data key was made (the sweep of keys a crash left).
    key_creation_time(),
]
