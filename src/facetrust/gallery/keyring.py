"""The gallery's keys: master key, gallery secrets, per-subject data keys, sealed templates.

Every secret of a gallery is wrapped by its master key: the audit key and the
template-protection secret in the store, each subject's data key (and each
index file's key) in the key store. Templates and photos are sealed with
AES-256-GCM under their subject's data key, with a label that names what they
are, so a sealed value cannot be moved to another row. Destroying a data key
is what erasure means: every copy of the subject's ciphertext, backups
included, becomes unreadable (crypto-shredding).

A master key can be rotated while other processes still hold the old one in
memory (they checked it when they opened the gallery). So every write of a
wrapped data key first checks the store's ``master_key_id`` while it holds
the key-store write lock (:meth:`Keyring.require_current_master_key`): a
process whose key was rotated away is refused instead of leaving a key that
only the retired master key can unwrap (see :mod:`.keys`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from .. import crypto
from ..errors import KeyMaterialError, StoreError
from ..store.base import KeyStore, Store, TemplateRecord

AUDIT_SECRET = "audit_key"
TEMPLATE_SECRET = "template_secret"
GALLERY_SECRETS = (AUDIT_SECRET, TEMPLATE_SECRET)
#: The store's meta entry naming the master key the gallery is sealed with.
MASTER_KEY_ID = "master_key_id"


def data_key_label(name: str) -> str:
    """The wrapping label of the data key kept under ``name`` in the key store."""
    return f"data-key:{name}"


def secret_label(name: str) -> str:
    """The wrapping label of the gallery secret ``name``."""
    return f"secret:{name}"


def template_label(template: TemplateRecord) -> str:
    """The sealing label of a stored template: binds it to its id, subject and model."""
    return f"template:{template.template_id}:{template.subject_id}:{template.model_id}"


class Keyring:
    """Wraps and unwraps a gallery's keys, and seals and opens its templates.

    Parameters
    ----------
    store : Store
        Holds the wrapped gallery secrets.
    keystore : KeyStore
        Holds the wrapped data keys (one per subject, one per index file).
    master_key : MasterKey
        Wraps every other key.
    """

    def __init__(self, store: Store, keystore: KeyStore, master_key: crypto.MasterKey) -> None:
        self.store = store
        self.keystore = keystore
        self.master_key = master_key
        self._template_secret: tuple[int, bytes] | None = None

    # ------------------------------------------------------------------ gallery secrets
    def secret(self, name: str) -> bytes:
        """The gallery secret ``name`` (e.g. :data:`TEMPLATE_SECRET`), unwrapped.

        Raises
        ------
        StoreError
            The secret is missing: the store is damaged.
        """
        with self.store.snapshot():
            wrapped = self.store.get_secret(name)
        if wrapped is None:
            raise StoreError(f"The gallery secret {name!r} is missing: the store is damaged.")
        return self.master_key.unwrap(wrapped, secret_label(name))

    def template_secret(self) -> bytes:
        """The secret that protects (rotates) every template before it is stored."""
        return self.current_template_secret()[1]

    def current_template_secret(self) -> tuple[int, bytes]:
        """The template secret and a store generation at which it is current.

        Kept in memory with the generation it was read at. Renewing it
        (:func:`~.keys.rekey_templates`, in any process) moves the generation,
        so one read of the counter tells whether the copy is current. What a
        write transaction reads is not kept: it may yet be rolled back.
        """
        if self._template_secret is not None and not self.store.in_transaction():
            generation, secret = self._template_secret
            if self.store.generation() == generation:
                return generation, secret
        with self.store.snapshot():
            generation = self.store.generation()
            secret = self.secret(TEMPLATE_SECRET)
        if not self.store.in_transaction():
            self._template_secret = (generation, secret)
        return generation, secret

    def derived_key(self, label: str) -> bytes:
        """A key for ``label`` derived from the gallery's audit secret (see
        :func:`~facetrust.crypto.derive_key`).

        Only holders of the master key can compute it. It survives master-key
        rotations: a rotation re-wraps the audit secret, never renews it.
        """
        return crypto.derive_key(self.secret(AUDIT_SECRET), label)

    def wrap_secret(self, name: str, secret: bytes) -> bytes:
        """``secret`` wrapped by the master key, as stored under ``name``."""
        return self.master_key.wrap(secret, secret_label(name))

    # ------------------------------------------------------------------ data keys
    def data_key(
        self, name: str, *, create: bool = False, now: datetime | None = None
    ) -> bytes | None:
        """The data key kept under ``name`` (a subject id), or None if there is none.

        With ``create``, a missing key is generated and stored first (in its
        own key-store transaction, so the key commits before the data it seals),
        made at ``now`` (see :meth:`make_data_key`).

        Raises
        ------
        KeyMaterialError
            With ``create``: the master key was rotated since this gallery was
            opened (see :meth:`require_current_master_key`); nothing was stored.
        """
        wrapped = self.keystore.get_key(name)
        if wrapped is None and create:
            return self.make_data_key(name, now=now)
        return None if wrapped is None else self.unwrap_data_key(name, wrapped)

    def make_data_key(self, name: str, *, now: datetime | None = None) -> bytes:
        """Generate and store a data key under ``name`` unless another process stored
        one meanwhile; returns the key stored.

        For a caller that just read no key under ``name``: the key store is read
        again under its write lock (its own transaction, so the key commits
        before the data it seals), and an existing key is never replaced. The
        key is stored with the time it was made (``now``, default the system
        clock): a subject's key whose subject was never committed (a process
        killed in between) is destroyed by the retention sweep once it is old
        enough not to be an enrolment still writing.

        Raises
        ------
        KeyMaterialError
            The master key was rotated since this gallery was opened (see
            :meth:`require_current_master_key`); nothing was stored.
        """
        with self.keystore.transaction():
            wrapped = self.keystore.get_key(name)
            if wrapped is None:
                self.require_current_master_key()
                wrapped = self.master_key.wrap(crypto.generate_key(), data_key_label(name))
                made = datetime.now(UTC) if now is None else now
                self.keystore.add_key(name, wrapped, created_at=made.isoformat())
        return self.unwrap_data_key(name, wrapped)

    def require_current_master_key(self) -> None:
        """Refuse to wrap with a master key the gallery no longer uses.

        Reads the store's master key id in one statement, which sees every
        earlier commit; call it while holding the key-store write lock (inside
        ``keystore.transaction()``) before writing a wrapped key. Key-store
        writes are serialised, and a rotation switches the id before its last
        re-scan of the key store (:func:`~.keys.rotate_master_key`), so a key
        written after the check is either seen by that re-scan or refused here.

        The read sees the newest id only outside a store read snapshot: a
        caller holding ``store.snapshot()`` open across the write gets the id
        of the snapshot's start.

        Raises
        ------
        KeyMaterialError
            The gallery is sealed with another master key: it was rotated after
            this process opened the gallery.
        """
        current = self.store.get_meta(MASTER_KEY_ID)
        if current != self.master_key.key_id_hex:
            raise KeyMaterialError(
                f"The gallery's master key is now {current}, but this process holds "
                f"{self.master_key.key_id_hex} (from {self.master_key.source}): the key was "
                "rotated (`facetrust keys rotate`) after the gallery was opened here. Nothing "
                "was stored. Open the gallery again (restart this process) with its current "
                "key file, then retry."
            )

    def unwrap_data_key(self, name: str, wrapped: bytes) -> bytes:
        """Unwrap a data key read from the key store under ``name``."""
        return self.master_key.unwrap(wrapped, data_key_label(name))

    def new_data_key(self, name: str) -> bytes:
        """Generate a data key, store it under ``name`` (replacing any) and return it.

        Raises
        ------
        KeyMaterialError
            The master key was rotated since this gallery was opened; nothing
            was stored.
        """
        key = crypto.generate_key()
        with self.keystore.transaction():
            self.require_current_master_key()
            self.keystore.put_key(name, self.master_key.wrap(key, data_key_label(name)))
        return key

    def add_data_key(self, name: str, *, now: datetime) -> bytes:
        """Generate a data key for a name never used before, store it (made at ``now``)
        and return it.

        One statement, committed on return (see :meth:`KeyStore.add_key`), then
        one read of the store's master key id. The check comes after the write,
        not under the key-store lock, to keep this path (a kept probe: every
        identification with candidates) to two statements and off the lock.
        It is as strong: a key committed before the read saw the old id is
        committed before the rotation re-scans the key store (the rotation
        switches the id first), so the re-scan re-wraps it; a read that sees a
        newer id deletes the key again and refuses. Only a process whose key
        was rotated away and that dies between the two leaves such a key: it
        seals nothing, and for a kept probe's key the retention sweep deletes
        it once it is an hour old.

        Raises
        ------
        KeyMaterialError
            The master key was rotated since this gallery was opened; the key
            was deleted again.
        """
        key = crypto.generate_key()
        self.keystore.add_key(
            name, self.master_key.wrap(key, data_key_label(name)), created_at=now.isoformat()
        )
        try:
            self.require_current_master_key()
        except KeyMaterialError:
            self.destroy_data_keys([name])
            raise
        return key

    def destroy_data_keys(self, names: Iterable[str]) -> int:
        """Delete the data keys under ``names`` (crypto-shredding); returns how many existed."""
        destroyed = 0
        with self.keystore.transaction():
            for name in names:
                destroyed += bool(self.keystore.delete_key(name))
        return destroyed

    # ------------------------------------------------------------------ templates
    def seal_template(
        self, template: TemplateRecord, vector: npt.NDArray[np.float32], data_key: bytes
    ) -> bytes:
        """Seal the protected ``vector`` of ``template`` (its ciphertext is ignored)."""
        plain = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        return crypto.seal(data_key, plain, template_label(template))

    def open_template(
        self, template: TemplateRecord, data_key: bytes
    ) -> npt.NDArray[np.float32]:
        """The protected vector sealed in ``template``, shape (dim,), float32."""
        plain = crypto.open_sealed(data_key, template.ciphertext, template_label(template))
        return np.frombuffer(plain, dtype=np.float32).copy()

    def replace_master_key(self, new_key: crypto.MasterKey) -> None:
        """Use ``new_key`` from now on (after every wrapped value was re-wrapped)."""
        self.master_key = new_key
