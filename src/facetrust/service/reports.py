"""The evaluation reports a service shows its auditors: files in one folder, read-only."""

from __future__ import annotations

import re
from pathlib import Path

#: Report file suffixes served, with their media types.
REPORT_TYPES = {".json": "application/json", ".html": "text/html", ".md": "text/markdown",
                ".csv": "text/csv"}
_REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def report_files(folder: Path) -> list[Path]:
    """The report files directly in ``folder``, by name (none if it does not exist).

    Only plain files with a known suffix and a safe name are listed, so a
    request can never name a path outside the folder.
    """
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in REPORT_TYPES and _REPORT_NAME.match(p.name)
    )
