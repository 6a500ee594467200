"""Versioned PostgreSQL schemas of the gallery and the key store.

The same schema as :mod:`facetrust.store.migrations`, rendered from
:mod:`.schema` in PostgreSQL's words: ``BYTEA`` for ciphertext, an identity
column ``ord`` where SQLite orders by ``rowid``; PL/pgSQL triggers for the
append-only audit log and pgvector are PostgreSQL's own. Each list
entry is one migration; its index + 1 is the version it brings the database
to, recorded in the ``facetrust_schema`` table. Never edit a released entry:
append a new one.
"""

from __future__ import annotations

from .schema import (
    POSTGRES_TYPES,
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

#: The quorum of each identification made before migration 9, from its ``identify``
#: audit event (which has recorded ``review_quorum`` since the first release).
_RECORDED_QUORUMS = """
    UPDATE identifications AS i
        SET review_quorum = (a.body::jsonb ->> 'review_quorum')::integer
        FROM audit_events AS a
        WHERE a.kind = 'identify'
          AND a.body::jsonb ->> 'identification_id' = i.identification_id;
"""

GALLERY_MIGRATIONS: list[str] = [
    gallery_tables(POSTGRES_TYPES) + audit_head_table(POSTGRES_TYPES) + _APPEND_ONLY,
    # 2: the keyed digest of each template's source photo (resumable batch
    # enrolment), and the opt-in server-side search: protected (rotated, not
    # encrypted) 128-d vectors in a pgvector column under an HNSW index.
    source_digest_column()
    + """
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
    event_tables(POSTGRES_TYPES),
    # 4: change tracking (SQLite migration 4).
    change_tracking(POSTGRES_TYPES),
    # 5: stored responses of keyed requests (Idempotency-Key; SQLite migration 5).
    idempotency_table(POSTGRES_TYPES),
    # 6: probes of identifications awaiting review (SQLite's pending-probe migration).
    pending_probe_tables(POSTGRES_TYPES),
    # 7: the shared work queue of batch enrolment workers (enroll-batch --queue).
    batch_queue_table(POSTGRES_TYPES),
    # 8: why an identification was closed undecided (no candidate eligible any more).
    identification_closure_column(),
    # 9: the review quorum each identification is decided by (SQLite migration 9).
    identification_quorum_column() + _RECORDED_QUORUMS,
]

KEYSTORE_MIGRATIONS: list[str] = [
    keystore_tables(POSTGRES_TYPES),
    # 2: when each data key was made (SQLite migration 2).
    key_creation_time(),
]
