"""Versioned PostgreSQL schemas of the gallery and the key store.

The same schema as :mod:`facetrust.store.migrations`, in PostgreSQL's words:
``BYTEA`` for ciphertext, an identity column ``ord`` where SQLite orders by
``rowid``, and PL/pgSQL triggers for the append-only audit log. Each list
entry is one migration; its index + 1 is the version it brings the database
to, recorded in the ``facetrust_schema`` table. Never edit a released entry:
append a new one.
"""

from __future__ import annotations

#: SQLSTATE 23000 (integrity_constraint_violation): the driver reports it as an
#: IntegrityError, like a duplicate key, so every store turns it into StoreError.
_APPEND_ONLY = """
    CREATE FUNCTION facetrust_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only'
            USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$;
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION facetrust_audit_append_only();
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION facetrust_audit_append_only();
    CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION facetrust_audit_append_only();
"""

GALLERY_MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE secrets (name TEXT PRIMARY KEY, wrapped BYTEA NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO counters VALUES ('generation', 0);
    CREATE TABLE subjects (
        ord BIGINT GENERATED ALWAYS AS IDENTITY,
        subject_id TEXT PRIMARY KEY,
        display_name TEXT,
        created_at TEXT NOT NULL,
        last_interaction_at TEXT NOT NULL,
        erased_at TEXT
    );
    CREATE TABLE consents (
        ord BIGINT GENERATED ALWAYS AS IDENTITY,
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
        ord BIGINT GENERATED ALWAYS AS IDENTITY,
        template_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        model_id TEXT NOT NULL,
        ciphertext BYTEA NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX templates_by_subject ON templates(subject_id);
    CREATE TABLE photos (
        ord BIGINT GENERATED ALWAYS AS IDENTITY,
        photo_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        ciphertext BYTEA NOT NULL,
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
        threshold DOUBLE PRECISION NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        candidates TEXT NOT NULL
    );
    CREATE TABLE reviews (
        ord BIGINT GENERATED ALWAYS AS IDENTITY,
        identification_id TEXT NOT NULL REFERENCES identifications(identification_id),
        subject_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        note TEXT,
        PRIMARY KEY (identification_id, subject_id, reviewer)
    );
    CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        purpose TEXT,
        subject_ids TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_mac TEXT NOT NULL,
        mac TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        mac TEXT NOT NULL,
        head_mac TEXT NOT NULL
    );
    """
    + _APPEND_ONLY,
    # 2: the keyed digest of each template's source photo (resumable batch
    # enrolment), and the opt-in server-side search: protected (rotated, not
    # encrypted) 128-d vectors in a pgvector column under an HNSW index.
    """
    ALTER TABLE templates ADD COLUMN source_digest TEXT;
    CREATE INDEX templates_by_source ON templates(subject_id, source_digest);
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE template_vectors (
        template_id TEXT PRIMARY KEY REFERENCES templates(template_id) ON DELETE CASCADE,
        subject_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        embedding vector(128) NOT NULL
    );
    CREATE INDEX template_vectors_hnsw ON template_vectors
        USING hnsw (embedding vector_l2_ops);
    CREATE INDEX template_vectors_by_subject ON template_vectors(subject_id);
    -- One subject's eligibility, as a function the planner cannot turn into a
    -- join: the HNSW scan stays the plan, and the filter runs on each row it
    -- yields (with hnsw.iterative_scan, until k rows pass).
    CREATE FUNCTION facetrust_eligible(
        subject TEXT, purpose TEXT, at TIMESTAMPTZ, cutoff TIMESTAMPTZ
    ) RETURNS BOOLEAN LANGUAGE plpgsql STABLE AS $$
    BEGIN
        RETURN EXISTS (
            SELECT 1 FROM subjects s JOIN consents c ON c.subject_id = s.subject_id
            WHERE s.subject_id = subject AND s.erased_at IS NULL
              AND s.last_interaction_at::timestamptz > cutoff
              AND c.withdrawn_at IS NULL AND c.expires_at::timestamptz > at
              AND (purpose IS NULL OR c.purposes::jsonb ? purpose)
        );
    END;
    $$;
    """,
    # 3: event galleries (gate), opt-outs and kept probe crops (SQLite migration 2).
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
        event_only BOOLEAN NOT NULL,
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
        ciphertext BYTEA NOT NULL,
        created_at TEXT NOT NULL,
        delete_after TEXT NOT NULL
    );
    CREATE INDEX probe_crops_by_deadline ON probe_crops(delete_after);
    """,
    # 4: change tracking (SQLite migration 4).
    """
    ALTER TABLE subjects ADD COLUMN changed_gen BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE consents ADD COLUMN changed_gen BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE templates ADD COLUMN changed_gen BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX subjects_by_change ON subjects(changed_gen);
    CREATE INDEX consents_by_change ON consents(changed_gen);
    CREATE INDEX templates_by_change ON templates(changed_gen);
    CREATE INDEX templates_by_model ON templates(model_id);
    CREATE TABLE template_removals (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        template_id TEXT NOT NULL,
        generation BIGINT NOT NULL
    );
    CREATE INDEX template_removals_by_generation ON template_removals(generation);
    INSERT INTO counters SELECT 'changes_from', value FROM counters WHERE name = 'generation';
    """,
]

KEYSTORE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE data_keys (subject_id TEXT PRIMARY KEY, wrapped BYTEA NOT NULL);
    """,
]
