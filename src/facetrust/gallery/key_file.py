"""Rotating a master key kept in a key file, resumable after an interruption.

The new key is written beside the old one (``<key>.new``, mode 0600) before
anything else changes; every wrapped value is re-wrapped (:meth:`Gallery.rotate_master_key`);
then the new file replaces the old one. Run again after a crash, it resumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import crypto
from ..errors import KeyMaterialError
from .config import GalleryConfig
from .core import Gallery
from .types import KeyRotationResult


def rotate_key_file(config: GalleryConfig, *, actor: str, **options: Any) -> KeyRotationResult:
    """Rotate the master key kept in ``config.key_file``, resuming an interrupted rotation.

    The new key is written to ``<key_file>.new`` (mode 0600) first, every
    wrapped value is re-wrapped, then the new file replaces the old one.
    """
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
