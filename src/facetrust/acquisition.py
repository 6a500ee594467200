"""Geometry and checks behind face recovery and pre-aligned (crop) input.

Two situations need a face box that no detector gave:

- the caller says the image is a face crop (``face_policy="crop"``);
- detection found nothing, and the last recovery step tries the whole image.

In both, landmarks are placed from a first box (:func:`crop_box`), and the
box is then re-estimated from the landmarks (:func:`box_from_landmarks`) the
way the detectors the landmark model was trained with would have drawn it, so
a few rounds converge on the face whether the crop is tight (a detector box, a
112x112 ArcFace chip) or loose (a 150x150 dlib chip, a passport photo).

The whole-image box is accepted as a face only when :func:`confirm_face` says
so: the landmarks give an aligned, upright chip of the canonical size, and a
face detector must find a face at the centre of that chip. A shape predictor
puts five points in any box, noise included, so the points alone prove
nothing; a detector's verdict on the normalised chip is the same face/non-face
decision the pipeline trusts everywhere else, made in the easiest conditions
it can have (upright, frontal-aligned, the size it was trained on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from .faces import Box, Face, Landmarks
from .models.base import Detector, Landmarker

__all__ = [
    "BOX_CENTRE_BELOW_EYES",
    "BOX_WIDTH_PER_EYE_DISTANCE",
    "PAD_FRACTION",
    "PORTRAIT_FACE_CENTRE",
    "PORTRAIT_FACE_WIDTH",
    "PORTRAIT_RATIO",
    "box_from_landmarks",
    "confirm_face",
    "crop_box",
    "padded_gray",
]

#: Fraction of each side added as a border on the retry pass (a sliding-window
#: detector misses faces that touch the border, as in tight crops).
PAD_FRACTION = 0.25

#: dlib's HOG box width over the distance between the eye centres of the 5-point
#: landmarks: 2.56 (sd 0.32) on 282 LFW faces.
BOX_WIDTH_PER_EYE_DISTANCE = 2.56

#: How far below the eyes' midpoint the box centre lies, in eye distances, along
#: the face's vertical: 0.53 (sd 0.12) on the same faces.
BOX_CENTRE_BELOW_EYES = 0.53

#: A crop at least this many times as tall as wide is a portrait (passport) crop.
PORTRAIT_RATIO = 1.2
#: Where a portrait crop's face box starts: its width (fraction of the crop's
#: width) and its centre (fraction of the crop's height from the top).
PORTRAIT_FACE_WIDTH = 0.55
PORTRAIT_FACE_CENTRE = 0.45

#: Side of the chip the confirming detector looks at, and the border (fraction
#: of the face template) around the face in it: the face is then about 100 px,
#: comfortably above the 80 px windows of dlib's detectors.
_CONFIRM_CHIP = 200
_CONFIRM_PADDING = 0.5
#: How far (fraction of the chip) the confirming box centre may be from where
#: the landmarks put the face, and the range of its width (fraction of the chip).
_CONFIRM_MAX_OFFSET = 0.15
_CONFIRM_WIDTH = (0.3, 0.8)


def crop_box(width: int, height: int) -> Box:
    """The first face box of a face crop of ``width`` x ``height`` pixels.

    A square crop (sides within ``PORTRAIT_RATIO``) is taken whole: a tight
    detector-box crop, a 112x112 ArcFace or 150x150 dlib chip. A portrait crop
    (passport-style head and shoulders, at least ``PORTRAIT_RATIO`` times as
    tall as wide) starts from a square ``PORTRAIT_FACE_WIDTH`` of its width,
    centred across it and ``PORTRAIT_FACE_CENTRE`` of the way down, where the
    photo standards (ICAO 9303, the US passport rules) put the face.
    """
    if height >= PORTRAIT_RATIO * width:
        side = PORTRAIT_FACE_WIDTH * width
        cx, cy = width / 2, PORTRAIT_FACE_CENTRE * height
        return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return Box(left, top, left + side, top + side)


def box_from_landmarks(landmarks: Landmarks) -> Box:
    """The box a frontal detector would draw around a face with these landmarks.

    Square, ``BOX_WIDTH_PER_EYE_DISTANCE`` eye distances wide, centred
    ``BOX_CENTRE_BELOW_EYES`` eye distances below the eyes' midpoint along the
    face's vertical (perpendicular to the eye line, so a tilted head works).
    """
    (ax, ay), (bx, by) = landmarks.eye_centres
    distance = math.hypot(bx - ax, by - ay) or 1.0
    down_x, down_y = -(by - ay) / distance, (bx - ax) / distance
    cx = (ax + bx) / 2 + BOX_CENTRE_BELOW_EYES * distance * down_x
    cy = (ay + by) / 2 + BOX_CENTRE_BELOW_EYES * distance * down_y
    half = BOX_WIDTH_PER_EYE_DISTANCE * distance / 2
    return Box(cx - half, cy - half, cx + half, cy + half)


def padded_gray(gray: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], int]:
    """``gray`` with a border of ``PAD_FRACTION`` of its longer side, and that border (px).

    The border is the image's mean grey, so it adds no edges a detector could
    mistake for a face.
    """
    offset = round(PAD_FRACTION * max(gray.shape))
    padded = cv2.copyMakeBorder(
        gray, offset, offset, offset, offset, cv2.BORDER_CONSTANT, value=int(gray.mean())
    )
    return np.asarray(padded, dtype=np.uint8), offset


def confirm_face(
    landmarker: Landmarker,
    pixels: npt.NDArray[np.uint8],
    face: Face,
    detectors: Sequence[Detector],
) -> float | None:
    """The score of a detector that finds ``face`` on its aligned chip; None if none does.

    The chip (upright, eyes level, about 100 px face in 200 px) is cut with the
    face's landmarks; each detector in turn looks at it (padded), and the first
    box centred where the landmarks put the face, and of a face's size, counts.
    """
    chip = landmarker.align(pixels, face.box, face.landmarks, _CONFIRM_CHIP, _CONFIRM_PADDING)
    gray = np.asarray(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    padded, offset = padded_gray(gray)
    centre = offset + _CONFIRM_CHIP / 2
    for detector in detectors:
        for detection in detector.detect(padded, 0):
            box = detection.box
            dx = (box.left + box.right) / 2 - centre
            dy = (box.top + box.bottom) / 2 - centre
            near = math.hypot(dx, dy) <= _CONFIRM_MAX_OFFSET * _CONFIRM_CHIP
            low, high = _CONFIRM_WIDTH
            if near and low * _CONFIRM_CHIP <= box.width <= high * _CONFIRM_CHIP:
                return detection.confidence
    return None
