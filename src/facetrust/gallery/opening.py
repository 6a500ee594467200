"""Making a gallery's store and key store, and checking them when it opens.

:meth:`~.core.Gallery.create` and :meth:`~.core.Gallery.init_folder` make a
new gallery's stores, sealed secrets and folder with these, then open the
gallery over what they made; every opening checks the store was sealed with
the master key it was given (:func:`gallery_id_sealed_with`).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from pathlib import Path
from typing import Any

from .. import crypto
from ..audit import AuditLog
from ..errors import KeyMaterialError, StoreError
from ..store.base import KeyStore, Store
from .backends import database_url, open_keystore, open_store
from .config import CONFIG_NAME, GalleryConfig
from .keyring import GALLERY_SECRETS, MASTER_KEY_ID, Keyring
from .parts import utc_clock

__all__ = [
    "audit_creation",
    "create_stores",
    "gallery_id_sealed_with",
    "interrupted_init_stage",
    "prepare_folder",
]


def create_stores(
    config: GalleryConfig, master_key: crypto.MasterKey, options: dict[str, Any]
) -> tuple[Store, KeyStore]:
    """The new gallery's store and key store, its secrets sealed with ``master_key``.

    Takes ``store`` and ``keystore`` out of ``options`` when given (else opens
    them from ``config``); reads ``environ`` and ``now`` from it.

    Raises
    ------
    StoreError
        A gallery already exists at ``config.db_path`` or in the database.
    InvalidParameter
        The clock ``now`` returns naive datetimes (see :func:`.parts.utc_clock`).
    """
    environ = options.get("environ")
    url = database_url(config, environ)
    if url is None and "store" not in options and Path(config.db_path).exists():
        raise StoreError(
            f"A gallery already exists at {str(config.db_path)!r}; open it instead."
        )
    created_at = utc_clock(options.get("now"))().isoformat()  # a bad clock: no file made
    store = options.pop("store", None) or open_store(config, environ, create=True)
    keystore = options.pop("keystore", None) or open_keystore(config, create=True)
    for path, is_file in (
        (config.db_path, url is None), (config.keystore_path, config.keystore_url is None)
    ):
        if is_file and Path(path).exists():
            os.chmod(path, 0o600)  # SQLite gives its -wal and -shm files the same mode
    with store.snapshot():
        existing = store.get_meta(MASTER_KEY_ID)
    if existing is not None:
        store.close()
        keystore.close()
        raise StoreError("The database already holds a gallery; open it instead.")
    keyring = Keyring(store, keystore, master_key)
    with store.transaction():
        store.set_meta("gallery_id", uuid.uuid4().hex)
        store.set_meta("created_at", created_at)
        store.set_meta(MASTER_KEY_ID, master_key.key_id_hex)
        for name in GALLERY_SECRETS:
            store.put_secret(name, keyring.wrap_secret(name, crypto.generate_key()))
    return store, keystore


def prepare_folder(
    folder: str | os.PathLike[str], settings: dict[str, Any]
) -> tuple[GalleryConfig, Path, crypto.MasterKey, bool]:
    """A new gallery's config (``settings`` over the defaults), where its config file
    goes, its master key, and whether an interrupted init is being finished.

    The config file is written last, so a folder with the gallery's key file but
    no config file is an init that was stopped (killed) before it finished: its
    key is used again (:func:`finish_interrupted_init` checks the rest).
    Otherwise a new master key is written to a 0600 key file in ``folder``.

    Raises
    ------
    StoreError
        ``folder`` already holds a gallery.
    """
    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / CONFIG_NAME
    config = GalleryConfig.in_folder(base, **settings)
    key_file = config.key_file or base / "gallery.key"  # in_folder always sets one
    if not config_path.exists() and Path(key_file).exists():
        return config, config_path, crypto.read_key_file(key_file), True
    files = [config_path, config.key_file]
    files += [] if database_url(config) else [config.db_path]
    files += [] if config.keystore_url else [config.keystore_path]
    for existing in files:
        if existing is not None and Path(existing).exists():
            raise StoreError(
                f"{str(existing)!r} already exists: {str(base)!r} holds a gallery. "
                "Use it, or choose an empty folder."
            )
    material = crypto.generate_key()
    crypto.write_key_file(key_file, material)
    return config, config_path, crypto.MasterKey(material, str(key_file)), False


def interrupted_init_stage(
    config: GalleryConfig, master_key: crypto.MasterKey, options: dict[str, Any]
) -> str:
    """How far the interrupted init of ``config``'s folder got: ``"key"`` (the key
    file only: the stores hold no gallery), ``"stores"`` (the gallery is made and
    sealed with ``master_key``, without its ``gallery.create`` event) or
    ``"created"`` (only the config file is missing). Opens the stores into
    ``options`` (``store``, ``keystore``).

    Raises
    ------
    StoreError
        The database holds a gallery that is not this init's (sealed with another
        key, or already in use: init never takes over a gallery), or the
        interrupted init was run with other settings.
    """
    store = options.setdefault("store", open_store(config, options.get("environ"), create=True))
    keystore = options.setdefault("keystore", open_keystore(config, create=True))
    with store.snapshot():
        sealed_with = store.get_meta(MASTER_KEY_ID)
        events = list(itertools.islice(store.audit_records(), 2)) if sealed_with else []
    if sealed_with is None:
        return "key"
    problem = None
    if sealed_with != master_key.key_id_hex or any(e.kind != "gallery.create" for e in events):
        problem = (
            f"The database already holds a gallery, but {CONFIG_NAME!r} is missing. Restore "
            "the config file from a backup (init never takes over a gallery), or choose an "
            "empty folder and database."
        )
    elif events:
        logged = json.loads(events[0].body)
        given = {"purposes": list(config.purposes), "retention_days": config.retention_days,
                 "review_quorum": config.review_quorum}
        if any(logged.get(name) != value for name, value in given.items()):
            problem = (
                "An interrupted init made this gallery with other settings ("
                + ", ".join(f"{name} {logged.get(name)!r}" for name in given)
                + "). Run init again with those settings to finish it."
            )
    if problem is not None:
        store.close()
        keystore.close()
        raise StoreError(problem)
    return "created" if events else "stores"


def gallery_id_sealed_with(store: Store, key: crypto.MasterKey, config: GalleryConfig) -> str:
    """The id of the gallery in ``store``, once it is known to be sealed with ``key``.

    Raises
    ------
    StoreError
        ``store`` holds no gallery.
    KeyMaterialError
        The gallery is sealed with another master key.
    """
    with store.snapshot():
        sealed_with = store.get_meta(MASTER_KEY_ID)
        gallery_id = store.get_meta("gallery_id") or ""
    if sealed_with is None:
        raise StoreError(
            f"{str(config.db_path)!r} is not an initialised gallery. Run `facetrust init`."
        )
    if sealed_with != key.key_id_hex:
        raise KeyMaterialError(
            f"This gallery is sealed with master key {sealed_with}, but the key from "
            f"{key.source} is {key.key_id_hex}. Use the gallery's key file or "
            f"{crypto.MASTER_KEY_ENV}; if a `facetrust keys rotate` was interrupted, run it "
            "again."
        )
    return gallery_id


def audit_creation(
    audit: AuditLog, gallery_id: str, master_key: crypto.MasterKey, config: GalleryConfig
) -> None:
    """Append the ``gallery.create`` event, the first of a new gallery's log."""
    audit.append(
        "gallery.create",
        actor="system",
        gallery_id=gallery_id,
        master_key_id=master_key.key_id_hex,
        purposes=list(config.purposes),
        retention_days=config.retention_days,
        review_quorum=config.review_quorum,
    )
