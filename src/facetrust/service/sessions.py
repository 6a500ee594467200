"""Console sessions: random tokens held server-side, never the API key.

Logging in to the console with an API key opens a session: the browser's
cookie holds a random 256-bit token; the server keeps only the token's
SHA-256 (a stolen copy of the key file opens no session), the key id, a
per-session CSRF token, and the session's times. A session ends at logout,
after ``idle_s`` without a request, ``max_age_s`` after login, and as soon as
its API key is revoked (checked on every request; revoking through the
service also deletes the key's sessions at once). The cookie is not an API
key: it does not work as a Bearer token.

Sessions live in the service database beside the API keys (table
``console_sessions``, see :mod:`.service_db`), so every server process of one
gallery, and every replica of a PostgreSQL gallery, shares them. Like a key
row, each session row is sealed: an HMAC-SHA256 of its token hash, key id,
CSRF token, creation and expiry under a key derived from the gallery's audit
secret (:data:`SESSION_KEY_LABEL`). A row written by someone without the
gallery's key (a session for a key they do not hold) opens nothing: it is
deleted when its token is shown. Rows from before seals end the same way
(their users log in again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .service_db import ServiceDatabase, open_service_database

__all__ = ["SESSION_KEY_LABEL", "ConsoleSession", "ConsoleSessions"]

#: The label of the key (derived from the gallery's audit secret) that seals session rows.
SESSION_KEY_LABEL = "facetrust console session rows v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_sessions (
    token_sha256 TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at {real} NOT NULL,
    last_seen {real} NOT NULL,
    expires_at {real} NOT NULL,
    row_mac TEXT
);
CREATE INDEX IF NOT EXISTS console_sessions_key ON console_sessions (key_id);
"""

#: Seconds between two writes of a session's ``last_seen`` (idle timeout precision).
_TOUCH_EVERY_S = 30.0


@dataclass(frozen=True)
class ConsoleSession:
    """One open console session (never its token)."""

    key_id: str
    csrf: str
    created_at: float
    last_seen: float
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    """Open, look up and end console sessions in the service database.

    Parameters
    ----------
    database : ServiceDatabase or path-like
        The service database (shared with the API keys; not closed here), or
        the path of a SQLite API key file to open (closed by :meth:`close`).
        The table is created there if missing.
    row_key : bytes
        Seals the rows: ``gallery.derive_key(SESSION_KEY_LABEL)``.
    idle_s : float
        A session unused this long (seconds) has ended.
    max_age_s : float
        A session ends this long (seconds) after login, used or not.
    clock : callable returning Unix seconds
    """

    def __init__(
        self,
        database: ServiceDatabase | str | os.PathLike[str],
        *,
        row_key: bytes,
        idle_s: float = 30 * 60,
        max_age_s: float = 8 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._owns_database = not isinstance(database, ServiceDatabase)
        self._db = (
            database if isinstance(database, ServiceDatabase)
            else open_service_database(Path(database))
        )
        self._db.create_tables(_SCHEMA)
        self._db.add_column("console_sessions", "row_mac", "TEXT")
        self._row_key = row_key

    def _seal_of(self, digest: str, session: ConsoleSession) -> str:
        fields = [SESSION_KEY_LABEL, digest, session.key_id, session.csrf,
                  repr(float(session.created_at)), repr(float(session.expires_at))]
        content = json.dumps(fields, separators=(",", ":")).encode()
        return hmac.new(self._row_key, content, hashlib.sha256).hexdigest()

    def open(self, key_id: str) -> tuple[str, ConsoleSession]:
        """A new session for ``key_id``: its token (for the cookie, shown once) and record."""
        now = self._clock()
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(key_id, secrets.token_urlsafe(32), now, now,
                                 now + self.max_age_s)
        with self._db.write():
            self._db.execute(
                "DELETE FROM console_sessions WHERE expires_at < ? OR last_seen < ?",
                (now, now - self.idle_s),
            )
            digest = _digest(token)
            self._db.execute(
                "INSERT INTO console_sessions (token_sha256, key_id, csrf, created_at, "
                "last_seen, expires_at, row_mac) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, key_id, session.csrf, now, now, session.expires_at,
                 self._seal_of(digest, session)),
            )
        return token, session

    def get(self, token: str) -> ConsoleSession | None:
        """The live session of ``token`` (its idle clock restarts), or None if ended
        (or if its row does not fit its seal: it is deleted then)."""
        if not token or len(token) > 100:
            return None
        now = self._clock()
        digest = _digest(token)
        row = self._db.execute(
            "SELECT key_id, csrf, created_at, last_seen, expires_at, row_mac "
            "FROM console_sessions WHERE token_sha256 = ?",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        session = ConsoleSession(str(row[0]), str(row[1]), row[2], row[3], row[4])
        sealed = row[5] is not None and hmac.compare_digest(
            self._seal_of(digest, session), str(row[5])
        )
        if not sealed or session.expires_at <= now or session.last_seen + self.idle_s <= now:
            with self._db.write():
                self._db.execute("DELETE FROM console_sessions WHERE token_sha256 = ?", (digest,))
            return None
        if now - session.last_seen >= _TOUCH_EVERY_S:
            with self._db.write():
                self._db.execute(
                    "UPDATE console_sessions SET last_seen = ? WHERE token_sha256 = ?",
                    (now, digest),
                )
        return session

    def end(self, token: str) -> ConsoleSession | None:
        """End the session of ``token`` (logout); the session it was, or None."""
        session = self.get(token)
        with self._db.write():
            self._db.execute(
                "DELETE FROM console_sessions WHERE token_sha256 = ?", (_digest(token),)
            )
        return session

    def end_all(self, key_id: str) -> int:
        """End every session of ``key_id`` (its key was revoked); how many there were."""
        with self._db.write():
            cursor = self._db.execute("DELETE FROM console_sessions WHERE key_id = ?", (key_id,))
        return int(cursor.rowcount)

    def close(self) -> None:
        if self._owns_database:
            self._db.close()
