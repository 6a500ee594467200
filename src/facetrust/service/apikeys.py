"""API keys of the service: created once, stored hashed, looked up by id, revocable.

A key reads ``ft_<key_id>_<secret>`` (16 hex digits, then 43 URL-safe
characters). Only its argon2id hash is stored; the full key is shown once, at
creation.

Checking a key is built so that invalid keys cost almost nothing:

1. A key that does not match the grammar is refused without any lookup.
2. Every well-formed key's secret is HMAC-ed under a per-store secret (a few
   microseconds, the same work for every key) and compared, with
   :func:`hmac.compare_digest`, with the digest remembered for that key id
   when it last verified. A match (within ``cache_s`` seconds) is accepted
   without argon2; the record is still read from the store, so a revocation
   (from any process) takes effect on the very next request.
3. An unknown key id is refused after that same HMAC, without argon2. This
   tells a caller whether a key id exists, which is no oracle worth having:
   key ids are not secret (they name keys in the audit log), and the 256-bit
   secret is what argon2 protects. Only a known id with a new secret reaches
   argon2, and the service throttles those per client address
   (:class:`~facetrust.service.limits.FailureThrottle`).

The keys live in the service database (:mod:`.service_db`): their own small
SQLite file beside a SQLite gallery (never in the gallery file, so a gallery
backup holds no credentials), or PostgreSQL for a fleet of replicas, behind
:class:`ApiKeyStore`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import InvalidParameter, StoreError
from ..gallery.checks import check_name
from .service_db import ServiceDatabase, open_service_database

KEY_PREFIX = "ft"
_ID_BYTES = 8
_SECRET_BYTES = 32
_KEY_GRAMMAR = re.compile(r"ft_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key string, or None (no lookup, no hashing)."""
    found = _KEY_GRAMMAR.fullmatch(presented.strip()) if len(presented) < 200 else None
    return None if found is None else (found.group(1), found.group(2))


class Role(enum.StrEnum):
    """What a key may do; see :data:`facetrust.service.permissions.PERMISSIONS`.

    ``enroller``: subjects, consents, enrolment, erasure.
    ``operator``: verification and identification (purpose and case reference required).
    ``auditor``: read-only audit log and evaluation reports, no biometric data.
    ``admin``: API keys, policy, retention sweep.
    """

    ENROLLER = "enroller"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """One key's record (never its secret).

    ``actor`` is how the key appears in the gallery's audit log: ``key:<key_id>``.
    """

    key_id: str
    role: Role
    name: str
    created_at: str
    created_by: str
    revoked_at: str | None = None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "role": self.role.value,
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its record and the full key string, which is shown this once."""

    record: ApiKey
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "key": self.key}


@dataclass(frozen=True)
class PreparedKey:
    """A key made but not stored yet (:meth:`ApiKeys.prepare`): audit it, then
    :meth:`ApiKeys.add` it, so that no key ever works without its audit event."""

    created: CreatedKey
    key_hash: str


class ApiKeyStore(Protocol):
    """Where key records and their hashes live."""

    def insert(self, record: ApiKey, key_hash: str) -> None: ...
    def get(self, key_id: str) -> tuple[ApiKey, str] | None: ...
    def list(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str, at: str) -> bool: ...
    def secret(self, name: str) -> bytes:
        """A random per-store secret (created on first use), e.g. for CSRF tokens."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT,
    key_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_secrets (name TEXT PRIMARY KEY, value {blob} NOT NULL);
"""


class SqlApiKeyStore:
    """API keys in the service database (:mod:`.service_db`): a SQLite file or PostgreSQL.

    Parameters
    ----------
    database : ServiceDatabase
        Shared with the console sessions and the limits; closed by :meth:`close`
        only when ``owns_database``.
    """

    def __init__(self, database: ServiceDatabase, *, owns_database: bool = False) -> None:
        self.database = database
        self._owns_database = owns_database
        database.create_tables(_SCHEMA)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ApiKey:
        return ApiKey(row[0], Role(row[1]), row[2], row[3], row[4], row[5])

    def insert(self, record: ApiKey, key_hash: str) -> None:
        with self.database.write() as db:
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key_id, record.role.value, record.name, record.created_at,
                    record.created_by, record.revoked_at, key_hash,
                ),
            )

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = self.database.execute(
            "SELECT key_id, role, name, created_at, created_by, revoked_at, key_hash "
            "FROM api_keys WHERE key_id = ?",
            (key_id,),
        ).fetchone()
        return None if row is None else (self._record(row), str(row[6]))

    def list(self) -> list[ApiKey]:
        rows = self.database.execute(
            "SELECT key_id, role, name, created_at, created_by, revoked_at FROM api_keys "
            "ORDER BY created_at, key_id"
        ).fetchall()
        return [self._record(r) for r in rows]

    def revoke(self, key_id: str, at: str) -> bool:
        with self.database.write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            return bool(cursor.rowcount > 0)

    def secret(self, name: str) -> bytes:
        # Replicas starting together race to create it: the first insert wins.
        with self.database.write() as db:
            db.execute(
                "INSERT INTO service_secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_bytes(32)),
            )
            row = db.execute("SELECT value FROM service_secrets WHERE name = ?", (name,)).fetchone()
        return bytes(row[0])

    def close(self) -> None:
        if self._owns_database:
            self.database.close()


class SqliteApiKeyStore(SqlApiKeyStore):
    """API keys in one SQLite file (created with mode 0600 if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(open_service_database(self.path), owns_database=True)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def parse_role(role: str) -> Role:
    """The :class:`Role` named ``role``, or :class:`InvalidParameter` listing the roles."""
    try:
        return Role(role)
    except ValueError:
        raise InvalidParameter(
            f"The 'role' must be one of {', '.join(r.value for r in Role)}. Got {role!r} instead."
        ) from None


class ApiKeys:
    """Create, check, list and revoke API keys over an :class:`ApiKeyStore`.

    Thread-safe. ``hasher`` defaults to argon2id with argon2-cffi's defaults
    (RFC 9106's low-memory profile).
    """

    def __init__(
        self,
        store: ApiKeyStore,
        hasher: PasswordHasher | None = None,
        *,
        cache_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        audit: Callable[..., None] | None = None,
    ) -> None:
        self.store = store
        #: Called as ``audit(kind, actor=..., **fields)`` after a key is created or
        #: revoked (the CLI writes the gallery's audit log with it; the service audits
        #: in its routes instead).
        self.audit = audit
        self._hasher = hasher or PasswordHasher()
        self._pepper = store.secret("verified-keys")
        self._cache_s = cache_s
        self._clock = clock
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def create(self, role: Role | str, name: str, *, created_by: str) -> CreatedKey:
        """A new key for ``role``; the returned ``key`` string is not stored anywhere.

        With an ``audit`` hook the creation is audited before the key is stored:
        a failure in between leaves an ``apikey.create`` event (then, if it can
        be written, ``apikey.create.failed``) but never a key without its event.
        """
        prepared = self.prepare(role, name, created_by=created_by)
        record = prepared.created.record
        if self.audit is None:
            return self.add(prepared)
        self.audit("apikey.create", actor=created_by, key_id=record.key_id,
                   role=record.role.value, name=record.name)
        try:
            return self.add(prepared)
        except Exception as error:
            self.audit("apikey.create.failed", actor=created_by, key_id=record.key_id,
                       error=type(error).__name__)
            raise

    def prepare(self, role: Role | str, name: str, *, created_by: str) -> PreparedKey:
        """A new key for ``role``, checked and hashed, not stored (see :class:`PreparedKey`)."""
        role = parse_role(role) if isinstance(role, str) else role
        if not name or not name.strip() or len(name) > 200:
            raise InvalidParameter(
                "The 'name' of a key must say who or what uses it (1 to 200 characters). "
                f"Got {name!r} instead."
            )
        name = check_name(name, "name")
        key_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        record = ApiKey(key_id, role, name, _now(), created_by)
        created = CreatedKey(record, f"{KEY_PREFIX}_{key_id}_{secret}")
        return PreparedKey(created, self._hasher.hash(secret))

    def add(self, prepared: PreparedKey) -> CreatedKey:
        """Store a key :meth:`prepare` made: it works from the next request on."""
        self.store.insert(prepared.created.record, prepared.key_hash)
        return prepared.created

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()

    def cached(self, key_id: str, secret: str) -> ApiKey | None:
        """The active key, if ``secret`` verified for ``key_id`` and was used within ``cache_s`` s.

        Cheap (one HMAC and one store read, no argon2); None means "not
        remembered" (or revoked), not "wrong".
        """
        digest = self._digest(secret)
        with self._lock:
            known = self._verified.get(key_id)
        if known is None or not hmac.compare_digest(known[0], digest):
            return None
        if known[1] < self._clock():
            with self._lock:
                self._verified.pop(key_id, None)
            return None
        found = self.store.get(key_id)
        if found is None or not found[0].active:
            with self._lock:
                self._verified.pop(key_id, None)
            return None
        with self._lock:  # sliding: a key in use stays remembered, an idle one is forgotten
            self._verified[key_id] = (digest, self._clock() + self._cache_s)
        return found[0]

    def active(self, key_id: str) -> ApiKey | None:
        """The record of ``key_id`` if it exists and is not revoked (a store read)."""
        found = self.store.get(key_id)
        return found[0] if found is not None and found[0].active else None

    def is_known(self, key_id: str) -> bool:
        """Whether a key with this id exists (revoked or not); a store read, no hashing."""
        return self.store.get(key_id) is not None

    def verify(self, key_id: str, secret: str) -> ApiKey | None:
        """Check ``secret`` against the stored argon2 hash (slow, ~0.1 s) and remember it.

        None for an unknown id (no hashing), a wrong secret or a revoked key.
        """
        found = self.store.get(key_id)
        if found is None:
            return None
        record, key_hash = found
        try:
            self._hasher.verify(key_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not record.active:
            return None
        with self._lock:
            self._verified[key_id] = (self._digest(secret), self._clock() + self._cache_s)
        return record

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` belongs to, or None (malformed, unknown, wrong, revoked).

        Malformed keys and unknown ids are refused without argon2; see the module notes.
        """
        parsed = parse_key(presented)
        if parsed is None:
            return None
        return self.cached(*parsed) or self.verify(*parsed)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return self.store.list()

    def revoke(self, key_id: str, *, revoked_by: str | None = None) -> ApiKey:
        """Revoke ``key_id`` (effective on the next request, in every server process).

        ``revoked_by`` names who did it, for the ``audit`` hook (None: the hook decides).

        Raises
        ------
        InvalidParameter
            No such key, or it is already revoked.
        """
        if not self.store.revoke(key_id, _now()):
            raise InvalidParameter(
                f"No active API key {key_id!r}. List keys with `facetrust keys list`."
            )
        with self._lock:
            self._verified.pop(key_id, None)
        found = self.store.get(key_id)
        if found is None:
            raise StoreError(f"The API key {key_id!r} vanished while being revoked.")
        if self.audit is not None:
            self.audit("apikey.revoke", actor=revoked_by, key_id=key_id,
                       role=found[0].role.value)
        return found[0]
