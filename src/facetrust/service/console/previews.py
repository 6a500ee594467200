"""Inline image previews for console result pages (``data:`` URLs)."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = ["chip_url", "data_url", "photo_url", "safe_photo_url"]


def data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    """``data:`` URL holding ``data``, for an ``<img src>`` the page's CSP allows."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def chip_url(chip: Any) -> str | None:
    """A PNG ``data:`` URL of an aligned face chip (an RGB array), or None without one."""
    if chip is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="PNG")
    return data_url(buffer.getvalue(), "image/png")


def photo_url(data: bytes) -> str:
    """A small JPEG copy of an uploaded photo to show beside its result."""
    with Image.open(io.BytesIO(data)) as image:
        copy = image.convert("RGB")
        copy.thumbnail((320, 320))
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=85)
    return data_url(buffer.getvalue())


def safe_photo_url(data: bytes) -> str | None:
    """:func:`photo_url` of an upload that may not be an image at all (None then).

    For showing a refused photo beside the reason it was refused.
    """
    if not data:
        return None
    try:
        return photo_url(data)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
