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

Every key row is *sealed*: it carries an HMAC-SHA256 (``row_mac``) of all its
fields (id, role, name, creation, revocation, secret hash) under a key derived
from the gallery's audit secret (:data:`ROW_KEY_LABEL`), which only holders of
the gallery's master key can compute. So someone who can write the service
database but holds no master key cannot add a key, change a key's role or
undo a revocation: every read of a row for authentication checks its seal
(in constant time), and a row without one, or with a wrong one, raises
:class:`~facetrust.errors.ApiKeyRowInvalid`, which the service answers like
an unknown key and audits. Rows written before seals existed are sealed once,
after an admin reviewed them (:meth:`ApiKeys.seal`, ``facetrust keys seal``);
the service does not start while an active one is left
(:meth:`ApiKeys.require_sealed`). What a seal cannot catch: a writer who puts
back an older copy of a row, sealed in its day (a revoked key's row from
before its revocation). See docs/gallery.md, "Anchoring the audit log".
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import ApiKeyRowInvalid, InvalidParameter, StoreError
from ..gallery.checks import check_name
from .service_db import ServiceDatabase, open_service_database

if TYPE_CHECKING:
    from ..gallery import Gallery

#: The label of the key (derived from the gallery's audit secret) that seals key rows.
ROW_KEY_LABEL = "facetrust service api-key rows v1"
#: The :class:`~facetrust.errors.ApiKeyRowInvalid` problems: no seal, a wrong seal.
UNSEALED = "api-key-row-unsealed"
TAMPERED = "api-key-row-tampered"

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
class KeyRow:
    """One stored key as read back: its record, the argon2 hash of its secret and its
    seal (``row_mac``, hex; None for a row written before rows were sealed)."""

    record: ApiKey
    key_hash: str
    row_mac: str | None


class ApiKeyStore(Protocol):
    """Where key records, their hashes and their seals live."""

    def insert(self, record: ApiKey, key_hash: str, row_mac: str) -> None: ...
    def get(self, key_id: str) -> KeyRow | None: ...
    def rows(self) -> list[KeyRow]:
        """Every row, oldest first."""
        ...

    def revoke(self, key_id: str, at: str, row_mac: str | None) -> bool:
        """Mark an active key revoked at ``at``, with its new seal; False if not active."""
        ...

    def seal(self, key_id: str, row_mac: str) -> bool:
        """Give an unsealed row its seal; False if it is gone or sealed already."""
        ...

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
    key_hash TEXT NOT NULL,
    row_mac TEXT
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
        # a key file written before rows were sealed gains the column (rows stay unsealed)
        database.add_column("api_keys", "row_mac", "TEXT")

    _COLUMNS = "key_id, role, name, created_at, created_by, revoked_at, key_hash, row_mac"

    @staticmethod
    def _row(row: tuple[Any, ...]) -> KeyRow:
        try:
            role = Role(row[1])
        except ValueError:  # no key is ever made with it: the row was written by hand
            raise ApiKeyRowInvalid(
                f"The API key row {row[0]!r} names the role {row[1]!r}, which facetrust never "
                "writes: the service database was changed by someone other than facetrust. "
                "Find out who, then delete the row (DELETE FROM api_keys WHERE key_id = "
                f"'{row[0]}').", key_id=str(row[0]), problem=TAMPERED,
            ) from None
        record = ApiKey(row[0], role, row[2], row[3], row[4], row[5])
        return KeyRow(record, str(row[6]), None if row[7] is None else str(row[7]))

    def insert(self, record: ApiKey, key_hash: str, row_mac: str) -> None:
        with self.database.write() as db:
            db.execute(
                f"INSERT INTO api_keys ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key_id, record.role.value, record.name, record.created_at,
                    record.created_by, record.revoked_at, key_hash, row_mac,
                ),
            )

    def get(self, key_id: str) -> KeyRow | None:
        row = self.database.execute(
            f"SELECT {self._COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else self._row(row)

    def rows(self) -> list[KeyRow]:
        rows = self.database.execute(
            f"SELECT {self._COLUMNS} FROM api_keys ORDER BY created_at, key_id"
        ).fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, key_id: str, at: str, row_mac: str | None) -> bool:
        with self.database.write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ?, row_mac = ? "
                "WHERE key_id = ? AND revoked_at IS NULL",
                (at, row_mac, key_id),
            )
            return bool(cursor.rowcount > 0)

    def seal(self, key_id: str, row_mac: str) -> bool:
        with self.database.write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET row_mac = ? WHERE key_id = ? AND row_mac IS NULL",
                (row_mac, key_id),
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
    """Create, check, list, seal and revoke API keys over an :class:`ApiKeyStore`.

    Thread-safe. ``hasher`` defaults to argon2id with argon2-cffi's defaults
    (RFC 9106's low-memory profile). ``row_key`` seals the rows (see the module
    notes): :meth:`for_gallery` derives it from the gallery's audit secret.
    """

    def __init__(
        self,
        store: ApiKeyStore,
        hasher: PasswordHasher | None = None,
        *,
        row_key: bytes,
        cache_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        audit: Callable[..., None] | None = None,
    ) -> None:
        self.store = store
        #: Called as ``audit(kind, actor=..., **fields)`` before a key is created or
        #: sealed and after one is revoked (the CLI writes the gallery's audit log with
        #: it; the service passes its own to :meth:`create` and audits revocations in
        #: its routes).
        self.audit = audit
        self._hasher = hasher or PasswordHasher()
        self._row_key = row_key
        self._pepper = store.secret("verified-keys")
        self._cache_s = cache_s
        self._clock = clock
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_gallery(cls, gallery: Gallery, store: ApiKeyStore, **options: Any) -> ApiKeys:
        """The keys in ``store``, sealed with ``gallery``'s key (:data:`ROW_KEY_LABEL`)."""
        return cls(store, row_key=gallery.derive_key(ROW_KEY_LABEL), **options)

    # ------------------------------------------------------------------ seals
    def _seal_of(self, record: ApiKey, key_hash: str) -> str:
        fields = [
            ROW_KEY_LABEL, record.key_id, record.role.value, record.name, record.created_at,
            record.created_by, record.revoked_at, key_hash,
        ]
        content = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.new(self._row_key, content, hashlib.sha256).hexdigest()

    def _problem_of(self, row: KeyRow) -> str | None:
        """None if ``row``'s seal fits it, else :data:`UNSEALED` or :data:`TAMPERED`."""
        if row.row_mac is None:
            return UNSEALED
        expected = self._seal_of(row.record, row.key_hash)
        return None if hmac.compare_digest(expected, row.row_mac) else TAMPERED

    def _checked(self, key_id: str) -> KeyRow | None:
        """The row of ``key_id`` (None if there is none), if its seal fits it.

        Raises
        ------
        ApiKeyRowInvalid
            The row has no seal, or a wrong one.
        """
        row = self.store.get(key_id)
        if row is None:
            return None
        problem = self._problem_of(row)
        if problem is None:
            return row
        with self._lock:
            self._verified.pop(key_id, None)
        if problem == UNSEALED:
            raise ApiKeyRowInvalid(
                f"The API key row {key_id!r} is not sealed: it was made before facetrust "
                "sealed key rows, or written into the service database by someone without "
                "the gallery's key. Review it with `facetrust keys seal`.",
                key_id=key_id, problem=problem,
            )
        raise ApiKeyRowInvalid(
            f"The API key row {key_id!r} does not fit its seal: it was changed in the service "
            "database by someone without the gallery's key. Find out who, and revoke the key "
            f"(`facetrust keys revoke {key_id}`).",
            key_id=key_id, problem=problem,
        )

    def unsealed(self) -> list[ApiKey]:
        """The keys whose rows have no seal (made before rows were sealed), oldest first."""
        return [row.record for row in self.store.rows() if row.row_mac is None]

    def tampered(self) -> list[ApiKey]:
        """The keys whose rows do not fit their seal (changed without the gallery's key)."""
        return [row.record for row in self.store.rows()
                if row.row_mac is not None and self._problem_of(row) is not None]

    def require_sealed(self) -> None:
        """Refuse to serve while an active key has an unsealed row (see :meth:`seal`).

        Raises
        ------
        StoreError
            Naming the keys and the command that seals them.
        """
        waiting = [key for key in self.unsealed() if key.active]
        if waiting:
            named = ", ".join(f"{k.key_id} ({k.role.value}, {k.name!r})" for k in waiting[:10])
            more = f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
            raise StoreError(
                f"The service database holds {len(waiting)} active API key(s) made before "
                f"facetrust sealed key rows: {named}{more}. Review them and seal the ones you "
                "recognise with `facetrust keys seal` (it lists them and asks first); revoke "
                "any you do not with `facetrust keys revoke KEY_ID`. Then start the service "
                "again."
            )

    def seal(self, keys: list[ApiKey], *, sealed_by: str) -> list[ApiKey]:
        """Seal the rows of ``keys`` (as :meth:`unsealed` listed them, after a review).

        A row that changed since it was listed, or that is sealed already, is left
        as it is. With an ``audit`` hook, ``apikey.seal`` is audited first, naming
        every key to be sealed. Returns the keys sealed.
        """
        listed = {key.key_id: key for key in keys}
        rows = [row for row in self.store.rows()
                if row.row_mac is None and listed.get(row.record.key_id) == row.record]
        if not rows:
            return []
        if self.audit is not None:
            self.audit(
                "apikey.seal", actor=sealed_by, key_ids=[r.record.key_id for r in rows],
                keys=[{"key_id": r.record.key_id, "role": r.record.role.value,
                       "name": r.record.name, "created_at": r.record.created_at,
                       "created_by": r.record.created_by, "revoked_at": r.record.revoked_at}
                      for r in rows],
            )
        return [row.record for row in rows
                if self.store.seal(row.record.key_id, self._seal_of(row.record, row.key_hash))]

    # ------------------------------------------------------------------ life cycle
    def create(
        self,
        role: Role | str,
        name: str,
        *,
        created_by: str,
        audit: Callable[..., None] | None = None,
    ) -> CreatedKey:
        """A new key for ``role``; the returned ``key`` string is not stored anywhere.

        With an ``audit`` hook (``audit``, else the one given at construction)
        the creation is audited before the key is stored: a failure in between
        leaves an ``apikey.create`` event (then, if it can be written,
        ``apikey.create.failed``) but never a key without its event.
        """
        audit = audit or self.audit
        role = parse_role(role) if isinstance(role, str) else role
        if not name or not name.strip():
            raise InvalidParameter(
                "The 'name' of a key must say who or what uses it (1 to 200 characters). "
                f"Got {name!r} instead."
            )
        name = check_name(name, "name")  # in NFC, at most 200 characters there
        key_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        record = ApiKey(key_id, role, name, _now(), created_by)
        key_hash = self._hasher.hash(secret)
        if audit is not None:
            audit("apikey.create", actor=created_by, key_id=key_id, role=role.value, name=name)
        try:
            self.store.insert(record, key_hash, self._seal_of(record, key_hash))
        except Exception as error:
            if audit is not None:
                audit("apikey.create.failed", actor=created_by, key_id=key_id,
                      error=type(error).__name__)
            raise
        return CreatedKey(record, f"{KEY_PREFIX}_{key_id}_{secret}")

    # ------------------------------------------------------------------ checking
    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()

    def cached(self, key_id: str, secret: str) -> ApiKey | None:
        """The active key, if ``secret`` verified for ``key_id`` and was used within ``cache_s`` s.

        Cheap (one HMAC, one store read and its seal's HMAC, no argon2); None
        means "not remembered" (or revoked), not "wrong".

        Raises
        ------
        ApiKeyRowInvalid
            The key's row no longer fits its seal.
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
        found = self._checked(key_id)
        if found is None or not found.record.active:
            with self._lock:
                self._verified.pop(key_id, None)
            return None
        with self._lock:  # sliding: a key in use stays remembered, an idle one is forgotten
            self._verified[key_id] = (digest, self._clock() + self._cache_s)
        return found.record

    def active(self, key_id: str) -> ApiKey | None:
        """The record of ``key_id`` if it exists, is not revoked and fits its seal (a
        store read; :class:`~facetrust.errors.ApiKeyRowInvalid` if it does not fit)."""
        found = self._checked(key_id)
        return found.record if found is not None and found.record.active else None

    def is_known(self, key_id: str) -> bool:
        """Whether a key with this id exists (revoked or not); a store read, no argon2.

        Raises :class:`~facetrust.errors.ApiKeyRowInvalid` for a row that does not
        fit its seal, so that such a row never costs an argon2 run.
        """
        return self._checked(key_id) is not None

    def verify(self, key_id: str, secret: str) -> ApiKey | None:
        """Check ``secret`` against the stored argon2 hash (slow, ~0.1 s) and remember it.

        None for an unknown id (no hashing), a wrong secret or a revoked key;
        :class:`~facetrust.errors.ApiKeyRowInvalid` (no hashing) for a row that
        does not fit its seal.
        """
        found = self._checked(key_id)
        if found is None:
            return None
        try:
            self._hasher.verify(found.key_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not found.record.active:
            return None
        with self._lock:
            self._verified[key_id] = (self._digest(secret), self._clock() + self._cache_s)
        return found.record

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` belongs to, or None (malformed, unknown, wrong, revoked).

        Malformed keys and unknown ids are refused without argon2; see the module notes.

        Raises
        ------
        ApiKeyRowInvalid
            The key's row has no seal, or a wrong one.
        """
        parsed = parse_key(presented)
        if parsed is None:
            return None
        return self.cached(*parsed) or self.verify(*parsed)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first (seals are not checked)."""
        return [row.record for row in self.store.rows()]

    def revoke(self, key_id: str, *, revoked_by: str | None = None) -> ApiKey:
        """Revoke ``key_id`` (effective on the next request, in every server process).

        The revocation is sealed with the row, so it cannot be undone by editing
        the row. A row whose seal is missing or wrong is revoked all the same (and
        keeps its unfitting seal). ``revoked_by`` names who did it, for the
        ``audit`` hook (None: the hook decides).

        Raises
        ------
        InvalidParameter
            No such key, or it is already revoked.
        """
        found = self.store.get(key_id)
        if found is None or not found.record.active:
            raise InvalidParameter(
                f"No active API key {key_id!r}. List keys with `facetrust keys list`."
            )
        revoked = replace(found.record, revoked_at=_now())
        seal = (self._seal_of(revoked, found.key_hash) if self._problem_of(found) is None
                else found.row_mac)
        if not self.store.revoke(key_id, str(revoked.revoked_at), seal):
            raise InvalidParameter(
                f"No active API key {key_id!r}. List keys with `facetrust keys list`."
            )
        with self._lock:
            self._verified.pop(key_id, None)
        if self.audit is not None:
            self.audit("apikey.revoke", actor=revoked_by, key_id=key_id,
                       role=revoked.role.value)
        return revoked
