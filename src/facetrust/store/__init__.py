"""Where a gallery keeps its data: the :class:`Store` interface and its SQLite implementation."""

from .base import (
    AuditHead,
    AuditRecord,
    ConsentRecord,
    IdentificationRecord,
    KeyStore,
    PhotoRecord,
    ReviewRecord,
    Store,
    SubjectRecord,
    TemplateRecord,
)
from .sqlite import SqliteKeyStore, SqliteStore

__all__ = [
    "AuditHead",
    "AuditRecord",
    "ConsentRecord",
    "IdentificationRecord",
    "KeyStore",
    "PhotoRecord",
    "ReviewRecord",
    "SqliteKeyStore",
    "SqliteStore",
    "Store",
    "SubjectRecord",
    "TemplateRecord",
]
