"""Where the service keeps its own records: a SQLite file, or a PostgreSQL database.

API keys (:mod:`.apikeys`), console sessions (:mod:`.sessions`) and the
shared rate limits (:mod:`.limits`) live in one *service database*, never in
the gallery's tables:

* beside a SQLite gallery, the API key file (``api-keys.db``), shared by
  the server processes of one host (``facetrust serve --workers N``);
* for a PostgreSQL gallery, a PostgreSQL database, shared by every replica
  on every host: ``api_keys_url`` when set, else the gallery's own database
  (the tables ``api_keys``, ``service_secrets``, ``console_sessions`` and
  ``service_buckets`` then sit beside the gallery's; give them their own
  database to keep argon2 key hashes out of the gallery's backups).

Every process reads these records from the database on every request, so
a key revoked, a session ended or a limit spent through one replica is in
force on every replica at the next request.

:class:`ServiceDatabase` is a thin connection: statements are written once,
with ``?`` placeholders, and run on either engine; :meth:`ServiceDatabase.write`
is one serialised transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL
``BEGIN`` with :attr:`ServiceDatabase.lock_rows` on the rows read).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError, StoreUnavailable
from ..store.postgres import connect, is_database_url, redact_url

__all__ = ["ServiceDatabase", "open_service_database"]

#: Advisory lock taken while a replica creates the service tables ("FTS1").
_SCHEMA_LOCK = 0x46545331


class ServiceDatabase:
    """One thread-safe connection to the service database (see the module notes).

    Use :func:`open_service_database` to open one.
    """

    def __init__(
        self,
        connection: Any,
        *,
        is_postgres: bool,
        name: str,
        reconnect: Callable[[], Any] | None = None,
    ) -> None:
        self.is_postgres = is_postgres
        #: What to write after a ``SELECT`` that a write transaction will update
        #: (PostgreSQL locks the rows; SQLite's ``BEGIN IMMEDIATE`` already holds the file).
        self.lock_rows = " FOR UPDATE" if is_postgres else ""
        #: Column type of binary values and of floating-point seconds.
        self.blob_type = "BYTEA" if is_postgres else "BLOB"
        self.real_type = "DOUBLE PRECISION" if is_postgres else "REAL"
        self.name = name
        self._db = connection
        #: Opens the connection again when it was lost (PostgreSQL restarted, a failover).
        self._reconnect = reconnect
        self._lock = threading.RLock()
        self._in_write = False
        self._errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
        if is_postgres:
            import psycopg

            self._errors = (psycopg.Error,)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); returns the driver's cursor."""
        if self.is_postgres:
            sql = sql.replace("?", "%s")
        with self._lock:
            if not self._in_write:
                self._reopen_if_lost()
            try:
                return self._db.execute(sql.encode() if self.is_postgres else sql, params)
            except self._errors as error:
                if getattr(self._db, "broken", False):
                    raise StoreUnavailable(
                        f"The service database {self.name!r} cannot be reached "
                        f"({str(error).strip()}). Retry shortly; the connection is opened "
                        "again on the next call."
                    ) from None
                raise StoreError(
                    f"The service database {self.name!r} failed: {str(error).strip()}. Check "
                    "that it is reachable and writable, then retry."
                ) from None

    @contextmanager
    def write(self) -> Iterator[ServiceDatabase]:
        """One write transaction, serialised with every other writer of the database."""
        with self._lock:
            if self._in_write:
                yield self
                return
            self.execute("BEGIN" if self.is_postgres else "BEGIN IMMEDIATE")
            self._in_write = True
            try:
                yield self
            except BaseException:
                self._in_write = False
                self._rollback()
                raise
            self._in_write = False
            self.execute("COMMIT")

    def _reopen_if_lost(self) -> None:
        if self._reconnect is not None and getattr(self._db, "broken", False):
            self._db = self._reconnect()

    def _rollback(self) -> None:
        with contextlib.suppress(Exception):  # the connection is gone: nothing to undo
            self._db.execute("ROLLBACK")

    def create_tables(self, script: str) -> None:
        """Run ``script`` (``CREATE ... IF NOT EXISTS`` statements; ``{blob}`` and ``{real}``
        stand for the engine's types), once even when several replicas start together."""
        statements = [
            s.strip()
            for s in script.format(blob=self.blob_type, real=self.real_type).split(";")
            if s.strip()
        ]
        with self.write():
            if self.is_postgres:
                self.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for statement in statements:
                self.execute(statement)

    def add_column(self, table: str, column: str, definition: str) -> None:
        """Add ``column`` to ``table`` (made by an earlier version) if it lacks it; once
        even when several replicas start together."""
        with self.write():
            if self.is_postgres:
                self.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                found = self.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ?", (table,)
                ).fetchall()
            else:
                found = [(row[1],) for row in self.execute(f"PRAGMA table_info({table})")]
            if column not in {str(row[0]) for row in found}:
                self.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        """Close the connection (other users of this object must be done)."""
        with self._lock:
            self._db.close()


def open_service_database(target: str | os.PathLike[str]) -> ServiceDatabase:
    """The service database at ``target``: a ``postgresql://`` URL, or a SQLite file path.

    A missing SQLite file is created with mode 0600 (it holds key hashes).

    Raises
    ------
    StoreError
        The database cannot be opened.
    """
    text = str(target)
    if is_database_url(text):
        what = "service database"
        return ServiceDatabase(
            connect(text, what=what), is_postgres=True, name=redact_url(text),
            reconnect=lambda: connect(text, what=what, error=StoreUnavailable),
        )
    path = Path(text)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
        lite = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        lite.execute("PRAGMA journal_mode = WAL")
    except (OSError, sqlite3.DatabaseError) as error:
        raise StoreError(
            f"Cannot open the service database {text!r}: {error}. Check the path and its "
            "permissions."
        ) from None
    return ServiceDatabase(lite, is_postgres=False, name=text)
