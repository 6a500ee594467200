"""Key management: master key rotation and template re-keying, neither needing re-enrolment.

* :func:`rotate_master_key` re-wraps every data key and gallery secret under a
  new master key. Each wrapped value names the key that wrapped it, so an
  interrupted rotation resumes where it stopped.
* :func:`rekey_templates` draws a new template-protection secret and renews
  every stored template (undo the old rotation, apply the new one, re-encrypt)
  in one transaction: renewability in the sense of ISO/IEC 24745.

Other processes keep working during a rotation, with the old master key in
memory, and may create data keys (an enrolment, a kept probe, an index file).
Nothing they write may stay wrapped by the old key, whose file is replaced at
the end. Two rules make sure of it, whatever the interleaving:

1. A rotation re-wraps the key store (one key-store transaction), then switches
   the store's ``master_key_id`` with the gallery secrets (one store
   transaction), then re-scans the key store (:func:`rewrap_data_keys`, again
   one key-store transaction) for keys written with the old key meanwhile.
2. Every write of a wrapped value checks, under its own write lock, that the
   store's ``master_key_id`` is the key it wraps with
   (:meth:`~.keyring.Keyring.require_current_master_key`), and is refused
   otherwise: the process must open the gallery again.

Key-store writers are serialised by the key store's write lock, so a data key
written by another process commits either before the re-scan takes that lock
(the re-scan sees it and re-wraps it) or after the re-scan commits, when the
switch has committed too and the check refuses it. Gallery secrets are written
in store transactions, serialised with the switch, which re-wraps any written
before it and makes the check refuse any written after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import crypto
from ..errors import InvalidParameter, KeyMaterialError
from ..store.base import KeyStore
from .checks import check_name
from .indexes import count_removal
from .keyring import (
    GALLERY_SECRETS,
    MASTER_KEY_ID,
    TEMPLATE_SECRET,
    data_key_label,
    secret_label,
)
from .parts import GalleryParts
from .search import put_server_side_vectors
from .types import KeyRotationResult


def rewrap_data_keys(
    keystore: KeyStore, new_key: crypto.MasterKey, old_keys: Sequence[crypto.MasterKey]
) -> int:
    """Re-wrap under ``new_key`` every data key of ``keystore`` wrapped by one of ``old_keys``.

    One key-store transaction, all or nothing. Returns how many keys were
    re-wrapped; keys already wrapped by ``new_key`` are left as they are.

    Raises
    ------
    KeyMaterialError
        A key is wrapped by a master key that is none of these (nothing is
        re-wrapped): pass that key too, from a copy of its key file.
    """
    count = 0
    with keystore.transaction():
        for name, wrapped in keystore.all_keys().items():
            if new_key.is_wrapper_of(wrapped):
                continue  # done by an earlier, interrupted rotation
            old = next((k for k in old_keys if k.is_wrapper_of(wrapped)), None)
            if old is None:
                wrapper = wrapped[: len(new_key.key_id)].hex()
                held = ", ".join(k.key_id_hex for k in (new_key, *old_keys))
                raise KeyMaterialError(
                    f"The data key {name!r} is wrapped by master key {wrapper}, which is none "
                    f"of the keys given ({held}). Nothing was re-wrapped. Find a copy of that "
                    "key's file and pass it as a retired key file; without it, what that key "
                    "seals cannot be read.",
                    field="retired_key_file",
                )
            label = data_key_label(name)
            keystore.put_key(name, new_key.wrap(old.unwrap(wrapped, label), label))
            count += 1
    return count


def rotate_master_key(
    parts: GalleryParts, new_key: crypto.MasterKey, *, actor: str
) -> KeyRotationResult:
    """Re-wrap every data key and secret of the gallery under ``new_key``.

    Safe while other processes use the gallery (see the module docstring):
    keys they create with the old key before the switch are re-wrapped by the
    final re-scan, and later ones are refused. Those processes must open the
    gallery again with the new key.

    Raises
    ------
    InvalidParameter
        ``new_key`` is the current key.
    KeyMaterialError
        The gallery is no longer sealed with this gallery's key (another
        rotation finished first), or a data key is wrapped by a master key
        other than the current one (see :func:`rewrap_data_keys`).
    """
    actor = check_name(actor, "actor")
    keyring = parts.keyring
    old = keyring.master_key
    if new_key.key_id == old.key_id:
        raise InvalidParameter("The new master key is the current one. Generate a fresh key.")
    with parts.keystore.transaction():
        keyring.require_current_master_key()  # not rotated by another process meanwhile
        # the bulk, while every process can still use the old key
        count = rewrap_data_keys(parts.keystore, new_key, [old])
    with parts.store.transaction():
        keyring.require_current_master_key()  # under the store's write lock
        for name in GALLERY_SECRETS:
            secret = parts.store.get_secret(name)
            if secret is not None and not new_key.is_wrapper_of(secret):
                label = secret_label(name)
                parts.store.put_secret(name, new_key.wrap(old.unwrap(secret, label), label))
                count += 1
        parts.store.set_meta(MASTER_KEY_ID, new_key.key_id_hex)
        event = parts.audit.append(
            "keys.rotate",
            actor=actor,
            old_key_id=old.key_id_hex,
            new_key_id=new_key.key_id_hex,
            rewrapped=count,
        )
    keyring.replace_master_key(new_key)
    # keys another process wrote with the old key before the switch; after it, they are refused
    late = finish_rotation(parts, [old], actor=actor)
    parts.keystore.reclaim()
    parts.store.reclaim()
    if late is None:
        return KeyRotationResult("master-key", count, new_key.key_id_hex, event.seq)
    return KeyRotationResult(
        "master-key", count + late.rewrapped, new_key.key_id_hex, late.audit_seq
    )


def finish_rotation(
    parts: GalleryParts, old_keys: Sequence[crypto.MasterKey], *, actor: str
) -> KeyRotationResult | None:
    """Re-wrap under the gallery's master key every data key still wrapped by ``old_keys``.

    The last step of :func:`rotate_master_key`, after the store's master key id
    was switched; run it alone to finish a rotation interrupted after the
    switch, before the old key is thrown away. Audited as ``keys.rewrap``
    when it re-wraps anything; None when there was nothing to re-wrap.

    Raises
    ------
    KeyMaterialError
        This gallery's master key is no longer the store's, or a data key is
        wrapped by a master key that is neither it nor one of ``old_keys``.
    """
    actor = check_name(actor, "actor")
    keyring = parts.keyring
    current = keyring.master_key
    with parts.keystore.transaction():
        keyring.require_current_master_key()
        count = rewrap_data_keys(parts.keystore, current, old_keys)
    if not count:
        return None
    event = parts.audit.append(
        "keys.rewrap",
        actor=actor,
        old_key_ids=[k.key_id_hex for k in old_keys],
        new_key_id=current.key_id_hex,
        rewrapped=count,
    )
    return KeyRotationResult("master-key", count, current.key_id_hex, event.seq)


def rekey_templates(parts: GalleryParts, *, actor: str) -> KeyRotationResult:
    """Renew every template under a new protection secret, without re-enrolment."""
    actor = check_name(actor, "actor")
    keyring = parts.keyring
    old = keyring.template_secret()
    new = crypto.generate_key()
    count = 0
    data_keys: dict[str, bytes | None] = {}
    with parts.store.transaction():
        # the secret is written wrapped by this process's master key: refuse one rotated away
        keyring.require_current_master_key()
        for template in parts.store.all_templates():
            if template.subject_id not in data_keys:
                data_keys[template.subject_id] = keyring.data_key(template.subject_id)
            data_key = data_keys[template.subject_id]
            if data_key is None:
                continue  # crypto-shredded; the sweep removes it
            vector = keyring.open_template(template, data_key)
            renewed = crypto.protect(crypto.unprotect(vector, old), new)
            sealed = keyring.seal_template(template, renewed, data_key)
            parts.store.replace_template_ciphertext(template.template_id, sealed)
            put_server_side_vectors(parts, [(template, renewed)])
            count += 1
        parts.store.put_secret(TEMPLATE_SECRET, keyring.wrap_secret(TEMPLATE_SECRET, new))
        parts.store.bump_generation()
        count_removal(parts.store)
        event = parts.audit.append("keys.rekey_templates", actor=actor, templates_renewed=count)
    parts.indexes.drop_files()  # the saved index holds the templates under the old secret
    parts.store.reclaim()
    return KeyRotationResult("template-protection", count, "", event.seq)
