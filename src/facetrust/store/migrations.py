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
    key_creation_time,
    keystore_tables,
    pending_probe_tables,
    source_digest_column,
)

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
]

KEYSTORE_MIGRATIONS: list[str] = [
    keystore_tables(SQLITE_TYPES),
    # 2: when each data key was made (the sweep of keys a crash left).
    key_creation_time(),
]
