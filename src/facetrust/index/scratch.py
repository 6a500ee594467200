"""Private scratch folders for an index's plaintext files, reclaimed after a crash.

The index libraries (hnswlib, faiss) read and write paths, so an index
decrypted from, or sealed into, a gallery's encrypted index file passes
through a file. :func:`private_scratch` gives a folder for it (mode 0700, in
``/dev/shm``, i.e. RAM, when there is one), deleted on return. A process
killed inside (SIGKILL, out of memory) cannot delete it, and the templates it
holds would stay readable there, through every later erasure, until a reboot.
So each folder is locked (``flock``) by its process from before it takes its
name to its deletion, and each new scratch folder, and :func:`remove_abandoned`
(run by erasure), first deletes the folders whose lock is free: the kernel
releases the lock of a process that is gone, however it ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so nothing is reclaimed
    fcntl = None  # type: ignore[assignment]

__all__ = ["SCRATCH_PREFIX", "private_scratch", "remove_abandoned", "scratch_root"]

#: Name prefix of the scratch folders (how :func:`remove_abandoned` finds them).
SCRATCH_PREFIX = "facetrust-scratch-"

#: The lock file inside each folder, locked by its process while the folder is used.
_OWNER = ".owner"

#: Name prefix of a folder being made: it gets its lock before it is renamed to
#: :data:`SCRATCH_PREFIX`, so a folder under that name with a free lock is abandoned.
_MAKING_PREFIX = ".facetrust-making-"

#: A folder killed while being made (it holds nothing but its lock file) is removed
#: once it is this old.
_MAKING_GRACE_S = 60.0


def scratch_root() -> Path:
    """Where scratch folders go: ``/dev/shm`` (RAM) when it can be written, else the
    system's temporary folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def private_scratch() -> Iterator[Path]:
    """A new private folder (mode 0700) for plaintext index files, deleted on return.

    Deletes first the scratch folders that killed processes left
    (:func:`remove_abandoned`).
    """
    root = scratch_root()
    remove_abandoned(root)
    making = Path(tempfile.mkdtemp(prefix=_MAKING_PREFIX, dir=root))
    owner = -1
    try:
        owner = os.open(making / _OWNER, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            fcntl.flock(owner, fcntl.LOCK_EX)
        folder = root / (SCRATCH_PREFIX + making.name[len(_MAKING_PREFIX):])
        os.rename(making, folder)
        making = folder
        yield folder
    finally:
        shutil.rmtree(making, ignore_errors=True)
        if owner >= 0:
            os.close(owner)


def remove_abandoned(root: Path | None = None) -> int:
    """Delete the scratch folders under ``root`` (default :func:`scratch_root`) whose
    process is gone; returns how many went. Folders of live processes, and of other
    users, are left alone."""
    if fcntl is None:
        return 0
    root = root or scratch_root()
    removed = 0
    for folder in root.glob(SCRATCH_PREFIX + "*"):
        with contextlib.suppress(OSError):
            removed += _remove_if_abandoned(folder)
    for folder in root.glob(_MAKING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > _MAKING_GRACE_S:
                shutil.rmtree(folder)
    return removed


def _remove_if_abandoned(folder: Path) -> bool:
    try:
        owner = os.open(folder / _OWNER, os.O_RDWR)
    except FileNotFoundError:  # its process died deleting it
        shutil.rmtree(folder)
        return True
    try:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use
        shutil.rmtree(folder)
        return True
    finally:
        os.close(owner)
