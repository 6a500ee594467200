"""The gallery's tables, written once for SQLite and PostgreSQL.

The two migration lists (:mod:`.migrations` for SQLite,
:mod:`.postgres_migrations` for PostgreSQL) render these with the database's
:class:`ColumnTypes`: the tables are the same, only some column types differ,
and PostgreSQL tables that SQLite orders by ``rowid`` get an identity column
``ord``. What is really one database's own (SQLite's triggers, PostgreSQL's
trigger function, pgvector) stays in its migration module.

A rendered entry is a released migration: change nothing here that changes
what an existing entry renders to; add new functions for new migrations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnTypes:
    """The column types in which two databases' schemas differ."""

    #: Bytes (ciphertext, wrapped keys).
    blob: str
    #: A 64-bit integer (counters, sequence numbers).
    int64: str
    #: A floating-point number.
    double: str
    #: A truth value.
    boolean: str
    #: The first column of a table kept in insertion order ("" where a rowid does it).
    order: str
    #: A primary key the database numbers by itself.
    serial_key: str


SQLITE_TYPES = ColumnTypes(
    blob="BLOB",
    int64="INTEGER",
    double="REAL",
    boolean="INTEGER",
    order="",
    serial_key="INTEGER PRIMARY KEY",
)
POSTGRES_TYPES = ColumnTypes(
    blob="BYTEA",
    int64="BIGINT",
    double="DOUBLE PRECISION",
    boolean="BOOLEAN",
    order="ord BIGINT GENERATED ALWAYS AS IDENTITY,",
    serial_key="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
)


def _render(script: str, types: ColumnTypes) -> str:
    lines = []
    for line in script.splitlines():
        if line.strip() == "{order}":
            if types.order:
                lines.append(line.replace("{order}", types.order))
            continue
        lines.append(
            line.replace("{blob}", types.blob)
            .replace("{int64}", types.int64)
            .replace("{double}", types.double)
            .replace("{boolean}", types.boolean)
            .replace("{serial_key}", types.serial_key)
        )
    return "\n".join(lines)


def gallery_tables(types: ColumnTypes) -> str:
    """Migration 1, up to the audit log's events table (the append-only rule follows)."""
    return _render(
        """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE secrets (name TEXT PRIMARY KEY, wrapped {blob} NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value {int64} NOT NULL);
    INSERT INTO counters VALUES ('generation', 0);
    CREATE TABLE subjects (
        {order}
        subject_id TEXT PRIMARY KEY,
        display_name TEXT,
        created_at TEXT NOT NULL,
        last_interaction_at TEXT NOT NULL,
        erased_at TEXT
    );
    CREATE TABLE consents (
        {order}
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
        {order}
        template_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        model_id TEXT NOT NULL,
        ciphertext {blob} NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX templates_by_subject ON templates(subject_id);
    CREATE TABLE photos (
        {order}
        photo_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
        ciphertext {blob} NOT NULL,
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
        threshold {double} NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        candidates TEXT NOT NULL
    );
    CREATE TABLE reviews (
        {order}
        identification_id TEXT NOT NULL REFERENCES identifications(identification_id),
        subject_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        note TEXT,
        PRIMARY KEY (identification_id, subject_id, reviewer)
    );
    CREATE TABLE audit_events (
        seq {int64} PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        purpose TEXT,
        subject_ids TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_mac TEXT NOT NULL,
        mac TEXT NOT NULL
    );
""",
        types,
    )


def audit_head_table(types: ColumnTypes) -> str:
    """Migration 1, the keyed checkpoint of the audit log."""
    return _render(
        """
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq {int64} NOT NULL,
        mac TEXT NOT NULL,
        head_mac TEXT NOT NULL
    );
""",
        types,
    )


def event_tables(types: ColumnTypes) -> str:
    """Event galleries (gate), opt-outs and kept probe crops."""
    return _render(
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
        event_only {boolean} NOT NULL,
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
        ciphertext {blob} NOT NULL,
        created_at TEXT NOT NULL,
        delete_after TEXT NOT NULL
    );
    CREATE INDEX probe_crops_by_deadline ON probe_crops(delete_after);
""",
        types,
    )


def source_digest_column() -> str:
    """The keyed digest of each template's source photo (resumable batch enrolment)."""
    return """
    ALTER TABLE templates ADD COLUMN source_digest TEXT;
    CREATE INDEX templates_by_source ON templates(subject_id, source_digest);
"""


def identification_closure_column() -> str:
    """Why an identification was closed undecided: a JSON object of each candidate
    still awaiting review when none of them could be confirmed any more (consent
    withdrawn or expired, subject erased, retention ended) and why; NULL for an
    identification decided by its reviews, or not decided."""
    return """
    ALTER TABLE identifications ADD COLUMN closed_because TEXT;
"""


def identification_quorum_column() -> str:
    """The review quorum each identification is decided by: the gallery's
    ``review_quorum`` when the search was made, so a later change of the config
    applies to later searches only. Each database's migration fills the rows of
    searches made before from their ``identify`` audit events, which recorded it."""
    return """
    ALTER TABLE identifications ADD COLUMN review_quorum INTEGER;
"""


def key_creation_time() -> str:
    """When each data key was made (ISO 8601; NULL for keys made before), so the retention
    sweep can tell a kept probe's key left by a crash from one an identify is writing."""
    return """
    ALTER TABLE data_keys ADD COLUMN created_at TEXT;
"""


def change_tracking(types: ColumnTypes) -> str:
    """Change tracking (``Store.changes_since``): stamps, template tombstones, their bound.

    Rows written before carry generation 0; ``changes_from`` starts at the
    current generation, so a reader from before the upgrade reloads in full.
    """
    return _render(
        """
    ALTER TABLE subjects ADD COLUMN changed_gen {int64} NOT NULL DEFAULT 0;
    ALTER TABLE consents ADD COLUMN changed_gen {int64} NOT NULL DEFAULT 0;
    ALTER TABLE templates ADD COLUMN changed_gen {int64} NOT NULL DEFAULT 0;
    CREATE INDEX subjects_by_change ON subjects(changed_gen);
    CREATE INDEX consents_by_change ON consents(changed_gen);
    CREATE INDEX templates_by_change ON templates(changed_gen);
    CREATE INDEX templates_by_model ON templates(model_id);
    CREATE TABLE template_removals (
        seq {serial_key},
        template_id TEXT NOT NULL,
        generation {int64} NOT NULL
    );
    CREATE INDEX template_removals_by_generation ON template_removals(generation);
    INSERT INTO counters SELECT 'changes_from', value FROM counters WHERE name = 'generation';
""",
        types,
    )


def idempotency_table(types: ColumnTypes) -> str:
    """Stored responses of keyed requests (``Idempotency-Key``), kept until ``expires_at``."""
    return _render(
        """
    CREATE TABLE idempotency_keys (
        principal TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        status {int64} NOT NULL,
        response TEXT NOT NULL,
        subject_id TEXT,
        biometric {boolean} NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (principal, idempotency_key)
    );
    CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys(expires_at);
    CREATE INDEX idempotency_keys_by_subject ON idempotency_keys(subject_id);
""",
        types,
    )


def pending_probe_tables(types: ColumnTypes) -> str:
    """Probes of identifications awaiting review, sealed, and when each was decided.

    A probe photo is kept (sealed under a key of its own) only while its
    identification is pending, and until ``delete_after`` at the latest.
    Identifications made before this migration have no ``decided_at``.
    """
    return _render(
        """
    CREATE TABLE pending_probes (
        identification_id TEXT PRIMARY KEY REFERENCES identifications(identification_id),
        ciphertext {blob} NOT NULL,
        created_at TEXT NOT NULL,
        delete_after TEXT NOT NULL
    );
    CREATE INDEX pending_probes_by_deadline ON pending_probes(delete_after);
    ALTER TABLE identifications ADD COLUMN decided_at TEXT;
    CREATE INDEX identifications_by_decision
        ON identifications(decided_at, started_at, identification_id);
""",
        types,
    )


def keystore_tables(types: ColumnTypes) -> str:
    """The key store: one wrapped data key per subject (and per index file)."""
    return _render(
        """
    CREATE TABLE data_keys (subject_id TEXT PRIMARY KEY, wrapped {blob} NOT NULL);
""",
        types,
    )


def batch_queue_table(types: ColumnTypes) -> str:
    """The shared work queue of batch enrolment workers (``enroll-batch --queue``).

    One row per photo of a named queue, keyed by its path relative to the batch
    folder: ``waiting``, ``claimed`` by a worker until ``lease_until`` (then
    claimable again), ``done`` or ``failed`` with a reason.
    """
    return _render(
        """
    CREATE TABLE batch_queue (
        queue TEXT NOT NULL,
        photo TEXT NOT NULL,
        subject_id TEXT,
        state TEXT NOT NULL,
        worker TEXT,
        lease_until TEXT,
        attempts {int64} NOT NULL,
        reason TEXT,
        message TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (queue, photo)
    );
    CREATE INDEX batch_queue_by_state ON batch_queue(queue, state, subject_id, photo);
    CREATE INDEX batch_queue_by_subject ON batch_queue(subject_id);
""",
        types,
    )
