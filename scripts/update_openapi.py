"""Regenerate docs/openapi.json from the service (a test checks it is up to date).

Usage: .venv/bin/python scripts/update_openapi.py
"""

from __future__ import annotations

from pathlib import Path

from facetrust.service.app import write_openapi

if __name__ == "__main__":
    target = write_openapi(Path(__file__).resolve().parent.parent / "docs" / "openapi.json")
    print(f"wrote {target}")
