"""The console's own scripts, served from ``/console/static`` (no CDN: the CSP allows 'self')."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from ..problems import Problem
from .rendering import PREFIX, SECURITY_HEADERS

__all__ = ["SCRIPTS", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Scripts the console pages may load, by file name.
SCRIPTS = frozenset({"copy.js"})

_FOLDER = Path(__file__).parent / "static"


@router.get("/static/{name}")
async def script(name: str) -> Response:
    """One of :data:`SCRIPTS`; every other name is not found."""
    if name not in SCRIPTS:
        raise Problem("not-found", "There is no console file by this name.")
    return Response((_FOLDER / name).read_bytes(), media_type="text/javascript",
                    headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
