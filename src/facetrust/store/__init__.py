"""Where a gallery keeps its data: the :class:`Store` interface, its SQLite and
PostgreSQL implementations."""

from .base import (
    AuditHead,
    AuditRecord,
    ConsentRecord,
    EligibilityColumns,
    IdempotencyRecord,
    IdentificationRecord,
    KeyStore,
    PendingProbeRecord,
    PhotoRecord,
    QueuedPhoto,
    ReviewRecord,
    Store,
    StoreChanges,
    SubjectRecord,
    TemplateRecord,
)
from .postgres import PostgresKeyStore, PostgresStore
from .sqlite import SqliteKeyStore, SqliteStore

__all__ = [
    "AuditHead",
    "AuditRecord",
    "ConsentRecord",
    "EligibilityColumns",
    "IdempotencyRecord",
    "IdentificationRecord",
    "KeyStore",
    "PendingProbeRecord",
    "PhotoRecord",
    "PostgresKeyStore",
    "PostgresStore",
    "QueuedPhoto",
    "ReviewRecord",
    "SqliteKeyStore",
    "SqliteStore",
    "Store",
    "StoreChanges",
    "SubjectRecord",
    "TemplateRecord",
]
