"""Display copies of photos for people to look at: scaled down, face box drawn in.

Used to show a reviewer the probe of an identification (with the detected
face outlined) beside each candidate's reference photo. The copy is a new
JPEG (no EXIF, no metadata); nothing here is stored.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageOps

from .faces import Box

__all__ = ["BOX_COLOUR", "display_copy"]

#: The outline colour of a drawn face box (high contrast on skin and on grey).
BOX_COLOUR = (255, 196, 0)


def display_copy(photo: bytes, box: Box | None = None, *, max_side: int = 400) -> bytes:
    """A JPEG copy of ``photo`` at most ``max_side`` pixels wide and high, with ``box`` drawn.

    Parameters
    ----------
    photo : bytes
        An encoded image; EXIF orientation is applied first, as the face
        pipeline does, so ``box`` (original-image pixels after orientation)
        lands on the face.
    box : Box, optional
        The face to outline.
    max_side : int
        Longest side of the copy, in pixels.
    """
    with Image.open(io.BytesIO(photo)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    if box is not None:
        width = max(2, round(max(image.size) / 120))
        ImageDraw.Draw(image).rectangle(
            (box.left * scale, box.top * scale, box.right * scale, box.bottom * scale),
            outline=BOX_COLOUR,
            width=width,
        )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
