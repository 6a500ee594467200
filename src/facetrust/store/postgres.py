"""The server backend: a gallery in a PostgreSQL database (with pgvector).

For deployments that outgrow one machine: several service processes or hosts
share one gallery, and the database brings the usual replication and backups.
Needs the ``postgres`` extra (``psycopg[binary]``) and a server with the
``vector`` extension (pgvector) installed; the schema is created and upgraded
by facetrust (versions in the ``facetrust_schema`` table).

Transactions mirror the SQLite store: a write transaction takes a
transaction-scoped advisory lock first (as SQLite's ``BEGIN IMMEDIATE`` takes
the write lock), so writers are serialised and each sees every earlier commit;
a snapshot is a ``REPEATABLE READ READ ONLY`` transaction. Inside a write
transaction the statements are pipelined (libpq pipeline mode): each is sent
without waiting for its answer until a read, a row count or the ``COMMIT``
needs the answers, so an identification's write takes three round trips, not
seven; a statement that failed is reported there, and the whole transaction
is rolled back. The audit log is append-only by trigger (``UPDATE``,
``DELETE`` and ``TRUNCATE`` are refused).

Erasure: PostgreSQL has no ``secure_delete``. A deleted row's bytes stay in
the table's pages until ``VACUUM`` reuses them, and in WAL archives and base
backups until they age out. Erasure therefore rests on crypto-shredding: the
subject's data key is destroyed in the key store, which makes every copy of
the ciphertext unreadable; :meth:`PostgresStore.reclaim` then runs ``VACUUM``
on the tables that held biometric data. Keep the key store in another database
(ideally another server) whose backups rotate quickly: a backup of the key
store holds keys that erasure destroyed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, StoreUnavailable
from ._pgvector import VectorSearch
from .postgres_migrations import GALLERY_MIGRATIONS, KEYSTORE_MIGRATIONS
from .sql import POSTGRES, SqlKeyStore, SqlStore
from .sql_base import Cursor

if TYPE_CHECKING:
    import psycopg

#: Advisory lock keys (any 64-bit numbers unique to facetrust): "FTG1", "FTK1".
_LOCKS = {"gallery": 0x46544731, "keystore": 0x46544B31}
_MIGRATION_LOCK = 0x46544D31  # "FTM1"
#: SQLSTATEs of a session the server ended: admin shutdown (a terminated backend
#: too), crash shutdown, cannot connect now; class 08 is "connection exception".
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def is_database_url(value: str | None) -> bool:
    """Whether ``value`` is a PostgreSQL connection URL (``postgresql://...``)."""
    return bool(value) and str(value).startswith(("postgresql://", "postgres://"))


#: libpq settings of every connection whose URL does not set them. A server that
#: has not completed the connection in 10 s is an error; TCP keepalives and a user
#: timeout notice a dead server or network within about 25 s, where the kernel's
#: defaults wait some 15 minutes (keepalives are answered by the server's kernel,
#: so a long statement is not cut short). Ignored on a Unix socket.
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "25000",
}


def connect(
    url: str, *, what: str = "PostgreSQL database", error: type[StoreError] = StoreError
) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to ``url``; ``error`` (naming ``what``) if none."""
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "The PostgreSQL backend needs psycopg 3. Install it with "
            "`pip install 'facetrust[postgres]'`."
        ) from None
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        given = conninfo_to_dict(url)
        defaults = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
        return psycopg.connect(make_conninfo(url, **defaults), autocommit=True)
    except psycopg.Error as failure:
        detail = " ".join(str(failure).split())  # libpq's message spans lines
        raise error(
            f"Cannot connect to the {what} {redact_url(url)!r} ({detail.rstrip('.')}). "
            "Check the URL, that the server runs and that the database exists (create it "
            "with `createdb`)."
        ) from None


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    return f"{scheme}{sep}{user}:***@{host}" if password else url


class _PostgresBase:
    """Connection, transactions and migrations shared by both stores."""

    _kind = "gallery"
    _migrations: list[str] = GALLERY_MIGRATIONS

    def __init__(self, url: str, *, create: bool = False) -> None:
        import psycopg

        self.url = url
        self._errors = psycopg
        self._db = connect(url)
        self._depth = 0
        self._writing = False  # inside transaction(), not snapshot()
        self._stamp: int | None = None
        self._pipeline: psycopg.Pipeline | None = None  # set inside transaction()
        self._ended = False  # the server ended the session (see _gone)
        try:
            self._migrate(create)
        except psycopg.Error as error:
            self._db.close()
            raise StoreError(
                f"Cannot open {redact_url(url)!r} as a facetrust {self._kind}: "
                f"{str(error).strip()}."
            ) from None
        except StoreError:
            self._db.close()
            raise

    def _version(self) -> int | None:
        row = self._db.execute("SELECT to_regclass('facetrust_schema')").fetchone()
        if row is None or row[0] is None:
            return None
        found = self._db.execute(
            "SELECT kind, version FROM facetrust_schema"
        ).fetchall()
        kinds = {str(k): int(v) for k, v in found}
        if self._kind not in kinds:
            raise StoreError(
                f"{redact_url(self.url)!r} holds a facetrust {', '.join(kinds) or 'schema'}, not "
                f"a {self._kind}. Give the {self._kind} its own database."
            )
        return kinds[self._kind]

    def _migrate(self, create: bool) -> None:
        version = self._version()
        if version is None and not create:
            raise StoreError(
                f"{redact_url(self.url)!r} holds no facetrust {self._kind}. Create one with "
                "`facetrust init --database-url URL`, or check the URL."
            )
        if version is not None and version > len(self._migrations):
            raise StoreError(
                f"{redact_url(self.url)!r} has {self._kind} schema version {version}, newer than "
                f"this facetrust understands ({len(self._migrations)}). Upgrade facetrust."
            )
        if version == len(self._migrations):
            return
        self._db.execute("BEGIN")
        try:
            # Several processes may open a fresh database at once: one migrates.
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = self._version()
            if version is None:
                tables = self._db.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                ).fetchone()
                if tables is not None and tables[0]:
                    raise StoreError(
                        f"{redact_url(self.url)!r} already holds tables that are not a facetrust "
                        f"{self._kind}. Give facetrust an empty database."
                    )
                self._db.execute(
                    "CREATE TABLE facetrust_schema (kind TEXT PRIMARY KEY, version INT NOT NULL)"
                )
                self._db.execute(
                    "INSERT INTO facetrust_schema VALUES (%s, 0)", (self._kind,)
                )
                version = 0
            for number, script in enumerate(self._migrations[version:], start=version + 1):
                self._db.execute(script.encode())  # several statements: no parameters
                self._db.execute(
                    "UPDATE facetrust_schema SET version = %s WHERE kind = %s",
                    (number, self._kind),
                )
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
            # one round trip: no parameters, so both go as one simple query
            self._alone(f"BEGIN; SELECT pg_advisory_xact_lock({_LOCKS[self._kind]})".encode())
        except self._errors.Error as error:
            self._rollback()
            raise self._failure(error, "Cannot start a write on") from None
        self._depth = 1
        self._stamp = None
        self._writing = True
        committing = False
        try:
            # Pipelined: the writes go without waiting for each answer; a read,
            # a rowcount (see _PipelinedCursor) or the COMMIT waits for them all.
            with self._db.pipeline() as pipeline:
                self._pipeline = pipeline
                yield
                if self._lost():  # lost earlier in the transaction: the server rolled it back
                    raise StoreUnavailable(
                        f"The connection to {redact_url(self.url)!r} was lost during the "
                        "write: nothing of it was stored. Retry."
                    )
                committing = True
                self._db.execute(b"COMMIT")
        except self._errors.Error as error:  # the COMMIT's wait reports any statement's error
            self._end_write()
            if committing and self._gone(error):
                raise StoreUnavailable(
                    f"The connection to {redact_url(self.url)!r} was lost while the write "
                    f"committed ({str(error).strip()}): it may or may not have been stored. "
                    "Check, then retry."
                ) from None
            self._rollback()
            raise self._failure(error, "The write failed on") from None
        except BaseException:
            self._end_write()
            if not committing:
                self._rollback()
            raise
        self._end_write()

    def _end_write(self) -> None:
        self._depth = 0
        self._writing = False
        self._pipeline = None

    def _rollback(self) -> None:
        self._end_transaction(b"ROLLBACK")

    def _end_transaction(self, sql: bytes) -> None:
        """Send ``sql`` (COMMIT or ROLLBACK) unless the connection is lost: the server
        has already ended the transaction then."""
        if not self._db.closed and not self._lost():
            with contextlib.suppress(self._errors.OperationalError):
                self._db.execute(sql)

    def _gone(self, error: Exception) -> bool:
        """Whether the connection is lost: broken, or ``error`` says the server ended
        the session (shut down, restarted, the backend terminated) before the
        driver noticed the closed socket."""
        state = getattr(error, "sqlstate", None) or ""
        if state.startswith("08") or state in _SESSION_ENDED:
            self._ended = True
        return self._lost()

    def _lost(self) -> bool:
        return bool(self._db.broken or self._ended)

    def _alone(
        self, sql: bytes, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> psycopg.Cursor[Any]:
        """Run ``sql`` outside any transaction (a read, or a BEGIN).

        A connection found lost (the server restarted, a failover, an idle
        connection killed) is opened again, and the statement, which changed
        nothing, is sent once more.
        """
        self._reopen_if_lost()
        try:
            return self._db.execute(sql, params)
        except self._errors.OperationalError as error:
            if not self._gone(error):
                raise
        self._reopen_if_lost()
        return self._db.execute(sql, params)

    def _reopen_if_lost(self) -> None:
        if not self._lost():
            return
        self._db.close()
        self._db = connect(self.url, error=StoreUnavailable)
        self._ended = False

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        try:
            self._alone(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except self._errors.Error as error:
            raise self._failure(error) from None
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._end_transaction(b"COMMIT")  # read-only: nothing is lost if it is not sent

    def close(self) -> None:
        self._db.close()

    def _vacuum(self, tables: Sequence[str]) -> None:
        if self._depth:
            raise StoreError("reclaim() must run after the transaction commits (a bug).")
        for table in tables:
            self._db.execute(f"VACUUM {table}".encode())

    def _write(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if not self._depth:
            raise StoreError("A write must run inside `with store.transaction():` (a bug).")
        return self._write_now(sql, params)

    def _write_now(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # outside a transaction the connection's autocommit commits the one statement
        if not self._depth:
            self._reopen_if_lost()  # not sent again on failure: it may have committed
        try:
            cursor = self._db.execute(sql.encode(), params)
        except self._errors.Error as error:
            # In a transaction it is aborted: the caller's `with transaction()` rolls it back.
            raise self._failure(error) from None
        return cursor if self._pipeline is None else _PipelinedCursor(cursor, self._sync)

    def _sync(self) -> None:
        """Wait for the answers to every statement sent so far in the pipelined write."""
        if self._pipeline is not None:
            try:
                self._pipeline.sync()
            except self._errors.Error as error:
                raise self._failure(error) from None

    def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            if self._depth:
                return self._db.execute(sql.encode(), params).fetchall()
            return self._alone(sql.encode(), params).fetchall()
        except self._errors.Error as error:
            raise self._failure(error) from None

    def _failure(self, error: Exception, doing: str = "Failed on") -> StoreError:
        """A driver error as a StoreError: StoreUnavailable when the server is unreachable."""
        if self._gone(error):
            return StoreUnavailable(
                f"The {self._kind} database {redact_url(self.url)!r} cannot be reached "
                f"({str(error).strip()}). Retry shortly; the connection is opened again on the "
                "next call."
            )
        if isinstance(error, self._errors.IntegrityError):
            return StoreError(
                f"The change breaks a rule of the {self._kind} ({str(error).strip()}): a record "
                "it refers to is missing, or one with the same key exists."
            )
        return StoreError(
            f"{doing} the {self._kind} database {redact_url(self.url)!r}: "
            f"{str(error).strip()}. Check that the server is reachable, then retry."
        )


class _PipelinedCursor:
    """A write's cursor inside a pipelined transaction.

    Its rowcount and rows exist only once the server has answered, so reading
    them first waits (``sync``) for every statement sent so far; a statement
    that failed raises its StoreError there (or, if nothing is read, at the
    COMMIT).
    """

    def __init__(self, cursor: psycopg.Cursor[Any], sync: Callable[[], None]) -> None:
        self._cursor = cursor
        self._sync = sync

    @property
    def rowcount(self) -> int:
        self._sync()
        return self._cursor.rowcount

    def fetchall(self) -> list[Any]:
        self._sync()
        return self._cursor.fetchall()


class PostgresStore(_PostgresBase, SqlStore, VectorSearch):
    """:class:`~facetrust.store.base.Store` in one PostgreSQL database.

    Parameters
    ----------
    url : str
        ``postgresql://user:password@host:port/database`` (libpq URL or DSN).
    create : bool
        Create the schema if the database is empty; otherwise a database
        without a facetrust gallery is a StoreError.

    Attributes
    ----------
    keep_removals : int
        How many template tombstones :meth:`changes_since` keeps (the newest);
        a reader further behind reloads in full.

    The opt-in in-database search (``put_vectors``, ``search_vectors``) comes
    from :class:`~facetrust.store._pgvector.VectorSearch`.
    """

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The psycopg connection, for bulk-loading tools (``COPY``); writes through it
        bypass the store's change tracking, so use it only to build a gallery."""
        return self._db


    dialect = POSTGRES

    def __init__(self, url: str, *, create: bool = False) -> None:
        super().__init__(url, create=create)
        self._counts = {}

    def reclaim(self) -> None:
        """VACUUM the tables that held biometric data (deleted rows' space is reused).

        This is not a secure delete: old pages, WAL archives and backups keep
        the ciphertext until they age out; it is unreadable once the subject's
        data key is destroyed.
        """
        self._vacuum(
            ("templates", "template_vectors", "photos", "probe_crops", "pending_probes")
        )


class PostgresKeyStore(_PostgresBase, SqlKeyStore):
    """:class:`~facetrust.store.base.KeyStore` in its own PostgreSQL database.

    Give it a different database from the gallery's, ideally on another
    server, with backups on a short rotation: erasing a subject destroys its
    key here and only here, and a restored backup of this database would
    bring erased keys back. :meth:`reclaim` runs ``VACUUM`` on the key table.
    """

    _kind = "keystore"
    _migrations = KEYSTORE_MIGRATIONS
    dialect = POSTGRES

    def reclaim(self) -> None:
        """VACUUM the key table (see the class note on backups)."""
        self._vacuum(("data_keys",))
