"""Inline image previews for console result pages (``data:`` URLs)."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from ...config import Settings
from ...errors import FacetrustError
from ...images import load_image
from ..offload import in_worker_thread

__all__ = ["chip_url", "data_url", "photo_preview"]


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


def _thumbnail_url(data: bytes, settings: Settings) -> str | None:
    if not data:
        return None
    try:
        pixels = load_image(data, settings)
    except FacetrustError:
        return None  # not an image, or over a cap: the page says why, without a preview
    copy = Image.fromarray(pixels)
    copy.thumbnail((320, 320))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=85)
    return data_url(buffer.getvalue())


async def photo_preview(data: bytes, settings: Settings) -> str | None:
    """A small JPEG copy of an uploaded photo to show beside its result, or None.

    The photo passes the same gate as the face model's input (byte cap, format,
    pixel cap read from the header before decoding), and is decoded in a
    worker thread, not on the event loop. None for an empty upload or one the
    gate refuses. Call it only after the request's rate-limit token is spent.
    """
    return await in_worker_thread(_thumbnail_url, data, settings)
