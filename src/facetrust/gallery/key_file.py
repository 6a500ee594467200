"""Rotating a master key kept in a key file, resumable after an interruption.

The new key is written beside the old one (``<key>.new``, mode 0600) before
anything else changes; every wrapped value is re-wrapped (:meth:`Gallery.rotate_master_key`);
then the new file replaces the old one. Run again after a crash, it resumes.
The old key is thrown away only once no data key is left wrapped by it (see
:mod:`.keys`): a key written with it by another process during the rotation is
re-wrapped first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import crypto
from ..errors import KeyMaterialError
from .config import GalleryConfig
from .core import Gallery
from .keys import finish_rotation
from .types import KeyRotationResult


def rotate_key_file(
    config: GalleryConfig,
    *,
    actor: str,
    retired_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> KeyRotationResult:
    """Rotate the master key kept in ``config.key_file``, resuming an interrupted rotation.

    The new key is written to ``<key_file>.new`` (mode 0600) first, every
    wrapped value is re-wrapped, then the new file replaces the old one.

    Parameters
    ----------
    config : GalleryConfig
    actor : str
        Recorded in the audit log.
    retired_key_file : path, optional
        A copy of a master key the gallery used before. Data keys still wrapped
        by it (left by an enrolment that ran during a rotation made before this
        check existed) are re-wrapped too, instead of stopping the rotation.
    **options
        Passed to :meth:`Gallery.open`.

    Raises
    ------
    KeyMaterialError
        The master key comes from the environment, no key file is configured,
        or a data key is wrapped by a master key that is not at hand (pass its
        file as ``retired_key_file``).
    """
    if os.environ.get(crypto.MASTER_KEY_ENV):
        raise KeyMaterialError(
            f"The master key comes from {crypto.MASTER_KEY_ENV}, not a key file. Rotate it "
            "with Gallery.rotate_master_key(new_key) and update the variable yourself."
        )
    if config.key_file is None:
        raise KeyMaterialError("This gallery has no key file configured; nothing to rotate.")
    retired = [] if retired_key_file is None else [crypto.read_key_file(retired_key_file)]
    key_file = Path(config.key_file)
    pending = key_file.with_name(key_file.name + ".new")
    if not pending.exists():
        crypto.write_key_file(pending, crypto.generate_key())
    new_key = crypto.read_key_file(pending)
    old_key = crypto.read_key_file(key_file)
    try:
        gallery = Gallery.open(config, master_key=old_key, **options)
    except KeyMaterialError:
        # Sealed with the new key already: the rotation stopped after the switch.
        # Keys written with the old one meanwhile are re-wrapped before its file goes.
        with Gallery.open(config, master_key=new_key, **options) as resumed:
            late = finish_rotation(resumed.parts, [old_key, *retired], actor=actor)
        os.replace(pending, key_file)
        return late or KeyRotationResult("master-key", 0, new_key.key_id_hex, 0)
    with gallery:
        early = finish_rotation(gallery.parts, retired, actor=actor) if retired else None
        result = gallery.rotate_master_key(new_key, actor=actor)
    os.replace(pending, key_file)
    if early is None:
        return result
    return KeyRotationResult(
        result.kind, early.rewrapped + result.rewrapped, result.new_key_id, result.audit_seq
    )
