"""Scratch folders for plaintext index files: a live process's folder is kept, a killed
process's folder is deleted by the next one (see facetrust.index.scratch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from facetrust.index.scratch import SCRATCH_PREFIX, private_scratch, remove_abandoned

HOLDER = r"""
import pathlib, sys, time
from facetrust.index.scratch import private_scratch

with private_scratch() as folder:
    (folder / "index").write_bytes(b"plaintext vectors")
    pathlib.Path(sys.argv[1]).write_text(str(folder))
    time.sleep(120)
"""


def test_a_scratch_folder_is_kept_while_its_process_lives_and_removed_once_killed(
    tmp_path: Path,
) -> None:
    said = tmp_path / "folder"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(said)])
    try:
        deadline = time.monotonic() + 60
        while not said.exists() or not said.read_text():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        folder = Path(said.read_text())
        assert folder.name.startswith(SCRATCH_PREFIX)
        assert folder.stat().st_mode & 0o077 == 0
        remove_abandoned()
        assert (folder / "index").exists()  # its process still uses it
        with private_scratch() as mine:  # nor does a new folder take it away
            assert mine != folder and (folder / "index").exists()
        assert not mine.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert folder.exists()  # a killed process cannot clean up
    remove_abandoned()
    assert not folder.exists()
