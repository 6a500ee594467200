"""Open the stores a :class:`GalleryConfig` names: SQLite files, or PostgreSQL databases.

The gallery database is ``FACETRUST_DATABASE_URL`` if set, else the config's
``database_url``, else the SQLite file ``db_path``. The key store is the
config's ``keystore_url`` if set, else the SQLite file ``keystore_path``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import InvalidParameter
from ..store.base import KeyStore, Store
from ..store.postgres import is_database_url
from .config import DATABASE_URL_ENV, GalleryConfig


def database_url(config: GalleryConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL of the gallery, or None for its SQLite file."""
    environ = os.environ if environ is None else environ
    url = environ.get(DATABASE_URL_ENV) or config.database_url
    if url is not None and not is_database_url(url):
        raise InvalidParameter(
            "The database URL must start with 'postgresql://'. "
            f"Got {url.split('@')[-1]!r} instead."
        )
    return url


def open_store(
    config: GalleryConfig, environ: Mapping[str, str] | None = None, *, create: bool = False
) -> Store:
    """The gallery's :class:`Store` (created when ``create`` is true)."""
    url = database_url(config, environ)
    if url is None:
        from ..store.sqlite import SqliteStore

        return SqliteStore(config.db_path, create=create)
    from ..store.postgres import PostgresStore

    return PostgresStore(url, create=create)


def open_keystore(config: GalleryConfig, *, create: bool = False) -> KeyStore:
    """The gallery's :class:`KeyStore` (created when ``create`` is true)."""
    if config.keystore_url is None:
        from ..store.sqlite import SqliteKeyStore

        return SqliteKeyStore(config.keystore_path, create=create)
    if not is_database_url(config.keystore_url):
        raise InvalidParameter(
            "The 'keystore_url' must start with 'postgresql://'. Got another kind of URL."
        )
    from ..store.postgres import PostgresKeyStore

    return PostgresKeyStore(config.keystore_url, create=create)
