"""The evaluation reports a service shows its auditors: files in one folder, read-only."""

from __future__ import annotations

import re
import stat
from pathlib import Path

__all__ = ["REPORT_TYPES", "report_file", "report_files"]

#: Report file suffixes served, with their media types.
REPORT_TYPES = {".json": "application/json", ".html": "text/html", ".md": "text/markdown",
                ".csv": "text/csv"}
_REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _served(folder: Path, path: Path) -> bool:
    """Whether ``path`` is a report: a safe name, a known suffix, and not a link.

    ``lstat`` refuses a symbolic link itself (a link to the gallery key is
    never followed), and the resolved path must still lie directly in the
    resolved folder (no link in a parent either).
    """
    if path.suffix not in REPORT_TYPES or not _REPORT_NAME.match(path.name):
        return False
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        return path.resolve(strict=True).parent == folder.resolve(strict=True)
    except OSError:
        return False


def report_files(folder: Path) -> list[Path]:
    """The report files directly in ``folder``, by name (none if it does not exist).

    Only regular files (not symbolic links, not devices or folders) with a
    known suffix and a safe name are listed, so a request can never name a path
    outside the folder.
    """
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _served(folder, p))


def report_file(folder: Path, name: str) -> Path | None:
    """The report called ``name`` in ``folder``, or None if there is no such regular file."""
    if not _REPORT_NAME.match(name) or not folder.is_dir():
        return None
    path = folder / name
    return path if _served(folder, path) else None
