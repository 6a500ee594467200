"""Key management: master key rotation and template re-keying, neither needing re-enrolment.

* :func:`rotate_master_key` re-wraps every data key and gallery secret under a
  new master key. Each wrapped value names the key that wrapped it, so an
  interrupted rotation resumes where it stopped.
* :func:`rekey_templates` draws a new template-protection secret and renews
  every stored template (undo the old rotation, apply the new one, re-encrypt)
  in one transaction: renewability in the sense of ISO/IEC 24745.
"""

from __future__ import annotations

from .. import crypto
from ..errors import InvalidParameter
from .checks import check_name
from .indexes import count_removal
from .keyring import GALLERY_SECRETS, TEMPLATE_SECRET, data_key_label, secret_label
from .parts import GalleryParts
from .search import put_server_side_vectors
from .types import KeyRotationResult


def rotate_master_key(
    parts: GalleryParts, new_key: crypto.MasterKey, *, actor: str
) -> KeyRotationResult:
    """Re-wrap every data key and secret of the gallery under ``new_key``."""
    actor = check_name(actor, "actor")
    old = parts.keyring.master_key
    if new_key.key_id == old.key_id:
        raise InvalidParameter("The new master key is the current one. Generate a fresh key.")
    count = 0
    with parts.keystore.transaction():
        for subject_id, wrapped in parts.keystore.all_keys().items():
            if new_key.is_wrapper_of(wrapped):
                continue  # done by an earlier, interrupted rotation
            label = data_key_label(subject_id)
            parts.keystore.put_key(subject_id, new_key.wrap(old.unwrap(wrapped, label), label))
            count += 1
    with parts.store.transaction():
        for name in GALLERY_SECRETS:
            secret = parts.store.get_secret(name)
            if secret is not None and not new_key.is_wrapper_of(secret):
                label = secret_label(name)
                parts.store.put_secret(name, new_key.wrap(old.unwrap(secret, label), label))
                count += 1
        parts.store.set_meta("master_key_id", new_key.key_id_hex)
        event = parts.audit.append(
            "keys.rotate",
            actor=actor,
            old_key_id=old.key_id_hex,
            new_key_id=new_key.key_id_hex,
            rewrapped=count,
        )
    parts.keyring.replace_master_key(new_key)
    parts.keystore.reclaim()
    parts.store.reclaim()
    return KeyRotationResult("master-key", count, new_key.key_id_hex, event.seq)


def rekey_templates(parts: GalleryParts, *, actor: str) -> KeyRotationResult:
    """Renew every template under a new protection secret, without re-enrolment."""
    actor = check_name(actor, "actor")
    keyring = parts.keyring
    old = keyring.template_secret()
    new = crypto.generate_key()
    count = 0
    data_keys: dict[str, bytes | None] = {}
    with parts.store.transaction():
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
