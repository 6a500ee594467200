"""Face crops in the conventions other systems produce, made from a photo and its face.

Used to test and benchmark pre-aligned input (``face_policy="crop"``) and
recovery on images that are mostly a face:

- ``tight112``, ``tight150``: the detector box, scaled to 112 and 150 px (the
  tight crops face datasets and ID pipelines hand out);
- ``dlib150``: dlib's own 150x150 chip (``get_face_chip``, padding 0.25);
- ``arcface112``: the 112x112 ArcFace (InsightFace) alignment: the eye
  centres moved to its reference points (38.29, 51.69) and (73.53, 51.50);
- ``passport``: head and shoulders, 35:45 (ICAO 9303 style), the face box about
  62% of the width.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from ..faces import Box, Face
from ..models.base import Landmarker

__all__ = ["ARCFACE_EYES", "CROP_CONVENTIONS", "arcface_chip", "crop_conventions", "cut"]

#: Where the 112x112 ArcFace alignment puts the eye centres (InsightFace's template).
ARCFACE_EYES = ((38.2946, 51.6963), (73.5318, 51.5014))

#: The conventions :func:`crop_conventions` makes, in its order.
CROP_CONVENTIONS = ("tight112", "tight150", "dlib150", "arcface112", "passport")


def cut(pixels: npt.NDArray[np.uint8], box: Box, width: int, height: int) -> npt.NDArray[np.uint8]:
    """``box`` of ``pixels`` resized to ``width`` x ``height``; edges replicated past the border."""
    left, top, right, bottom = (round(v) for v in (box.left, box.top, box.right, box.bottom))
    rows, cols = pixels.shape[:2]
    pad = max(0, -left, -top, right - cols, bottom - rows)
    padded = cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    part = padded[top + pad : bottom + pad, left + pad : right + pad]
    shrink = part.shape[1] > width
    resized = cv2.resize(
        part, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return np.ascontiguousarray(resized, dtype=np.uint8)


def arcface_chip(pixels: npt.NDArray[np.uint8], face: Face) -> npt.NDArray[np.uint8]:
    """The 112x112 ArcFace-style chip of ``face``: its eyes moved to ``ARCFACE_EYES``."""
    (ax, ay), (bx, by) = face.landmarks.eye_centres
    (px, py), (qx, qy) = ARCFACE_EYES
    # The similarity that maps one segment onto another, as a complex ratio.
    ratio = complex(qx - px, qy - py) / complex(bx - ax, by - ay)
    shift = complex(px, py) - ratio * complex(ax, ay)
    matrix = np.array(
        [[ratio.real, -ratio.imag, shift.real], [ratio.imag, ratio.real, shift.imag]]
    )
    chip = cv2.warpAffine(
        pixels, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(chip, dtype=np.uint8)


def crop_conventions(
    pixels: npt.NDArray[np.uint8], face: Face, landmarker: Landmarker
) -> dict[str, npt.NDArray[np.uint8]]:
    """Every convention of :data:`CROP_CONVENTIONS` cut from ``pixels`` around ``face``.

    Returns RGB uint8 arrays: (112, 112, 3), (150, 150, 3), (150, 150, 3),
    (112, 112, 3) and (386, 300, 3).
    """
    box = face.box
    cx, cy, side = (box.left + box.right) / 2, (box.top + box.bottom) / 2, box.width
    width = side / 0.62
    height = width * 45 / 35
    top = cy - 0.48 * height
    passport = Box(cx - width / 2, top, cx + width / 2, top + height)
    return {
        "tight112": cut(pixels, box, 112, 112),
        "tight150": cut(pixels, box, 150, 150),
        "dlib150": landmarker.align(pixels, box, face.landmarks, 150, 0.25),
        "arcface112": arcface_chip(pixels, face),
        "passport": cut(pixels, passport, 300, round(300 * 45 / 35)),
    }
