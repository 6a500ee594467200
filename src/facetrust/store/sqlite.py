"""The embedded default: a gallery in one SQLite file, its data keys in another.

Both files run in WAL mode (readers never block the writer) with foreign keys
on and ``secure_delete`` on, so deleted rows are overwritten with zeros rather
than left in free pages. :meth:`SqliteStore.reclaim` checkpoints and truncates
the write-ahead log, after which deleted bytes remain in neither file.

Writers take the write lock at the start of a transaction (``BEGIN
IMMEDIATE``) and wait up to ``busy_timeout_s`` for it, so several processes
can share a gallery file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .migrations import GALLERY_MIGRATIONS, KEYSTORE_MIGRATIONS
from .sql import SQLITE, SqlKeyStore, SqlStore

_APPLICATION_IDS = {"gallery": 0x46544731, "keystore": 0x46544B31}  # "FTG1", "FTK1"


def _lower(value: str | bytes | int | float | None) -> str | bytes | int | float | None:
    return value.lower() if isinstance(value, str) else value


class _SqliteBase:
    """Connection handling, transactions and migrations shared by both files."""

    _kind = "gallery"
    _migrations: list[str] = GALLERY_MIGRATIONS

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = False, busy_timeout_s: float = 30.0
    ) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(
                f"No {self._kind} file at {str(self.path)!r}. Create a gallery with "
                "`facetrust init`, or point --gallery at an existing one."
            )
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False
            )
            # SQLite's own LOWER folds A-Z only, so a search for "élodie" would miss
            # "Élodie" (and even "Élodie" itself: the search lowers what is typed);
            # Python's folds every letter, as PostgreSQL's does
            self._db.create_function("LOWER", 1, _lower, deterministic=True)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"Cannot open {str(self.path)!r} as a facetrust {self._kind}: {error}."
            ) from None
        self._depth = 0
        self._writing = False  # inside transaction(), not snapshot()
        self._stamp: int | None = None

    def _migrate(self) -> None:
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        expected = _APPLICATION_IDS[self._kind]
        foreign = app_id == 0 and (
            version != 0 or self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        )
        if app_id not in (0, expected) or foreign:
            raise StoreError(
                f"{str(self.path)!r} is a SQLite file but not a facetrust {self._kind}."
            )
        if version > len(self._migrations):
            raise StoreError(
                f"{str(self.path)!r} has schema version {version}, newer than this facetrust "
                f"understands ({len(self._migrations)}). Upgrade facetrust."
            )
        if version == len(self._migrations):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(self._migrations[version:], start=version + 1):
                for statement in _statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute(f"PRAGMA application_id = {expected}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise StoreError(f"Cannot start a write on {str(self.path)!r}: {error}.") from None
        self._depth = 1
        self._stamp = None
        self._writing = True
        try:
            yield
        except BaseException:
            self._depth = 0
            self._writing = False
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._writing = False
        self._db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._db.execute("BEGIN DEFERRED")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def reclaim(self) -> None:
        """Checkpoint and truncate the WAL so deleted bytes remain in no file."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        if not self._depth:
            raise StoreError("A write must run inside `with store.transaction():` (a bug).")
        return self._write_now(sql, params)

    def _write_now(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        # outside a transaction (isolation_level=None) the one statement commits itself
        try:
            return self._db.execute(sql, params)
        except sqlite3.IntegrityError as error:
            raise StoreError(
                f"The change breaks a rule of the {self._kind} ({error}): a record it refers "
                "to is missing, or one with the same key exists."
            ) from None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current))
    return statements


class SqliteStore(_SqliteBase, SqlStore):
    """:class:`~facetrust.store.base.Store` on one SQLite file.

    Parameters
    ----------
    path : path
        The gallery file (created when ``create`` is true).
    create : bool
        Create the file if missing; otherwise a missing file is a StoreError.
    busy_timeout_s : float
        How long a writer waits for another process's write to finish.

    Attributes
    ----------
    keep_removals : int
        How many template tombstones :meth:`changes_since` keeps (the newest);
        a reader further behind reloads in full.

    The methods are the shared SQL of :class:`~facetrust.store.sql.SqlStore`.
    """

    dialect = SQLITE


class SqliteKeyStore(_SqliteBase, SqlKeyStore):
    """:class:`~facetrust.store.base.KeyStore` on its own SQLite file.

    Keep this file out of bulk backups of the gallery (or back it up on a short
    rotation): erasing a subject destroys its key here, and only here.
    """

    _kind = "keystore"
    _migrations = KEYSTORE_MIGRATIONS
    dialect = SQLITE
