"""Key management: master key rotation and template re-keying, neither needing re-enrolment.

* :func:`rotate_master_key` re-wraps every data key and gallery secret under a
  new master key. Each wrapped value names the key that wrapped it, so an
  interrupted rotation resumes where it stopped.
* :func:`rekey_templates` draws a new template-protection secret and renews
  every stored template (undo the old rotation, apply the new one, re-encrypt)
  in one transaction: renewability in the sense of ISO/IEC 24745.
* :func:`rotate_key_file` does the first for a gallery whose key is a file,
  writing the new key beside it (``<key>.new``) before anything else changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import crypto
from ..errors import InvalidParameter, KeyMaterialError
from .erasure import count_removal
from .types import KeyRotationResult

if TYPE_CHECKING:
    from .config import GalleryConfig
    from .core import Gallery


def rotate_master_key(
    gallery: Gallery, new_key: crypto.MasterKey, *, actor: str
) -> KeyRotationResult:
    """Re-wrap every data key and secret of ``gallery`` under ``new_key``."""
    from .core import AUDIT_SECRET, TEMPLATE_SECRET

    old = gallery._key
    if new_key.key_id == old.key_id:
        raise InvalidParameter("The new master key is the current one. Generate a fresh key.")
    count = 0
    with gallery.keystore.transaction():
        for subject_id, wrapped in gallery.keystore.all_keys().items():
            if new_key.is_wrapper_of(wrapped):
                continue  # done by an earlier, interrupted rotation
            label = f"data-key:{subject_id}"
            gallery.keystore.put_key(subject_id, new_key.wrap(old.unwrap(wrapped, label), label))
            count += 1
    with gallery.store.transaction():
        for name in (AUDIT_SECRET, TEMPLATE_SECRET):
            secret = gallery.store.get_secret(name)
            if secret is not None and not new_key.is_wrapper_of(secret):
                label = f"secret:{name}"
                gallery.store.put_secret(name, new_key.wrap(old.unwrap(secret, label), label))
                count += 1
        gallery.store.set_meta("master_key_id", new_key.key_id_hex)
        event = gallery.audit.append(
            "keys.rotate",
            actor=actor,
            old_key_id=old.key_id_hex,
            new_key_id=new_key.key_id_hex,
            rewrapped=count,
        )
    gallery._key = new_key
    gallery.keystore.reclaim()
    gallery.store.reclaim()
    return KeyRotationResult("master-key", count, new_key.key_id_hex, event.seq)


def rekey_templates(gallery: Gallery, *, actor: str) -> KeyRotationResult:
    """Renew every template under a new protection secret, without re-enrolment."""
    from .core import TEMPLATE_SECRET

    old = gallery._secret(TEMPLATE_SECRET)
    new = crypto.generate_key()
    count = 0
    data_keys: dict[str, bytes | None] = {}
    with gallery.store.transaction():
        for template in gallery.store.all_templates():
            if template.subject_id not in data_keys:
                data_keys[template.subject_id] = gallery._data_key(template.subject_id)
            data_key = data_keys[template.subject_id]
            if data_key is None:
                continue  # crypto-shredded; the sweep removes it
            vector = gallery._decrypt(template, data_key)
            renewed = crypto.protect(crypto.unprotect(vector, old), new)
            sealed = crypto.seal(
                data_key, np.ascontiguousarray(renewed).tobytes(), gallery._template_label(template)
            )
            gallery.store.replace_template_ciphertext(template.template_id, sealed)
            gallery._put_vectors([(template, renewed)])
            count += 1
        gallery.store.put_secret(
            TEMPLATE_SECRET, gallery._key.wrap(new, f"secret:{TEMPLATE_SECRET}")
        )
        gallery.store.bump_generation()
        count_removal(gallery)
        event = gallery.audit.append("keys.rekey_templates", actor=actor, templates_renewed=count)
    gallery._drop_index_files()  # the saved graph holds the templates under the old secret
    gallery.store.reclaim()
    return KeyRotationResult("template-protection", count, "", event.seq)


def rotate_key_file(config: GalleryConfig, *, actor: str, **options: Any) -> KeyRotationResult:
    """Rotate the master key kept in ``config.key_file``, resuming an interrupted rotation.

    The new key is written to ``<key_file>.new`` (mode 0600) first, every
    wrapped value is re-wrapped, then the new file replaces the old one.
    """
    from .core import Gallery

    if os.environ.get(crypto.MASTER_KEY_ENV):
        raise KeyMaterialError(
            f"The master key comes from {crypto.MASTER_KEY_ENV}, not a key file. Rotate it "
            "with Gallery.rotate_master_key(new_key) and update the variable yourself."
        )
    if config.key_file is None:
        raise KeyMaterialError("This gallery has no key file configured; nothing to rotate.")
    key_file = Path(config.key_file)
    pending = key_file.with_name(key_file.name + ".new")
    if not pending.exists():
        crypto.write_key_file(pending, crypto.generate_key())
    new_key = crypto.read_key_file(pending)
    old_key = crypto.read_key_file(key_file)
    try:
        gallery = Gallery.open(config, master_key=old_key, **options)
    except KeyMaterialError:
        # sealed with the new key already: only the file swap was left to do
        with Gallery.open(config, master_key=new_key, **options):
            pass
        os.replace(pending, key_file)
        return KeyRotationResult("master-key", 0, new_key.key_id_hex, 0)
    with gallery:
        result = gallery.rotate_master_key(new_key, actor=actor)
    os.replace(pending, key_file)
    return result
