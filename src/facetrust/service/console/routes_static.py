"""The console's own scripts and style sheets, served from ``/console/static`` (no CDN,
no inline style or script: the console's Content-Security-Policy allows 'self' only)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from ..problems import Problem
from .rendering import PREFIX

__all__ = ["STATIC_FILES", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Files the console pages may load, by file name: their media types.
STATIC_FILES = {
    "copy.js": "text/javascript",
    "console.css": "text/css",
    "review.css": "text/css",
    "audit.css": "text/css",
}

_FOLDER = Path(__file__).parent / "static"


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """One of :data:`STATIC_FILES`; every other name is not found. Its headers
    (``no-cache``, not ``no-store``) are :mod:`facetrust.service.headers`'."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise Problem("not-found", "There is no console file by this name.")
    return Response((_FOLDER / name).read_bytes(), media_type=media_type)
