"""Versioned SQLite schemas of the gallery and the key store.

Each list entry is one migration; its index + 1 is the schema version it
brings the file to. Never edit a released entry: append a new one.
"""

from __future__ import annotations

GALLERY_MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE secrets (name TEXT PRIMARY KEY, wrapped BLOB NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters VALUES ('generation', 0);
    CREATE TABLE subjects (
        subject_id TEXT PRIMARY KEY,
        display_name TEXT,
        created_at TEXT NOT NULL,
        last_interaction_at TEXT NOT NULL,
        erased_at TEXT
    );
    CREATE TABLE consents (
        consent_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        purposes TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        evidence_ref TEXT NOT NULL,
        evidence_sha256 TEXT NOT NULL,
        notice_version TEXT NOT NULL,
        withdrawn_at TEXT,
        withdrawal_reason TEXT
    );
    CREATE INDEX consents_by_subject ON consents(subject_id);
    CREATE TABLE templates (
        template_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        model_id TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX templates_by_subject ON templates(subject_id);
    CREATE TABLE photos (
        photo_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX photos_by_subject ON photos(subject_id);
    CREATE TABLE identifications (
        identification_id TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        actor TEXT NOT NULL,
        case_ref TEXT,
        probe_sha256 TEXT NOT NULL,
        model_id TEXT NOT NULL,
        operating_point TEXT NOT NULL,
        threshold REAL NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        candidates TEXT NOT NULL
    );
    CREATE TABLE reviews (
        identification_id TEXT NOT NULL REFERENCES identifications(identification_id),
        subject_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        note TEXT,
        PRIMARY KEY (identification_id, subject_id, reviewer)
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        purpose TEXT,
        subject_ids TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_mac TEXT NOT NULL,
        mac TEXT NOT NULL
    );
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        mac TEXT NOT NULL,
        head_mac TEXT NOT NULL
    );
    """,
    # 2: event galleries (gate), opt-outs and kept probe crops.
    """
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        valid_from TEXT NOT NULL,
        valid_to TEXT NOT NULL,
        operating_point TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        closed_at TEXT
    );
    CREATE TABLE event_members (
        event_id TEXT NOT NULL REFERENCES events(event_id),
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        event_only INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        PRIMARY KEY (event_id, subject_id)
    );
    CREATE TABLE event_opt_outs (
        event_id TEXT NOT NULL REFERENCES events(event_id),
        reference TEXT NOT NULL,
        subject_id TEXT,
        opted_out_at TEXT NOT NULL,
        PRIMARY KEY (event_id, reference)
    );
    CREATE TABLE probe_crops (
        crop_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL REFERENCES events(event_id),
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL,
        delete_after TEXT NOT NULL
    );
    CREATE INDEX probe_crops_by_deadline ON probe_crops(delete_after);
    """,
    # 3: a keyed digest of the photo each template came from, so a batch
    # enrolment re-run recognises photos already enrolled (deleted with the template).
    """
    ALTER TABLE templates ADD COLUMN source_digest TEXT;
    CREATE INDEX templates_by_source ON templates(subject_id, source_digest);
    """,
    # 4: change tracking (Store.changes_since). Rows written before carry
    # generation 0; changes_from starts at the current generation, so a reader
    # behind the upgrade reloads in full.
    """
    ALTER TABLE subjects ADD COLUMN changed_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE consents ADD COLUMN changed_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE templates ADD COLUMN changed_gen INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX subjects_by_change ON subjects(changed_gen);
    CREATE INDEX consents_by_change ON consents(changed_gen);
    CREATE INDEX templates_by_change ON templates(changed_gen);
    CREATE INDEX templates_by_model ON templates(model_id);
    CREATE TABLE template_removals (
        seq INTEGER PRIMARY KEY,
        template_id TEXT NOT NULL,
        generation INTEGER NOT NULL
    );
    CREATE INDEX template_removals_by_generation ON template_removals(generation);
    INSERT INTO counters SELECT 'changes_from', value FROM counters WHERE name = 'generation';
    """,
]

KEYSTORE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE data_keys (subject_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL);
    """,
]
