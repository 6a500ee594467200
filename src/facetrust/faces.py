"""Value types for faces: boxes, landmarks, quality, embeddings.

All coordinates are in pixels of the original image (after EXIF orientation),
x to the right and y down. Boxes may extend past the image border when a face
touches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in original-image pixels (right/bottom exclusive)."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        """Return ``(coordinate - offset) / factor``: maps a box found on a scaled copy back."""
        return Box(
            (self.left - dx) / factor,
            (self.top - dy) / factor,
            (self.right - dx) / factor,
            (self.bottom - dy) / factor,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "left": round(self.left, 1),
            "top": round(self.top, 1),
            "right": round(self.right, 1),
            "bottom": round(self.bottom, 1),
        }


@dataclass(frozen=True)
class Landmarks:
    """Five facial landmarks: the two corners of each eye and the base of the nose.

    ``points`` holds (x, y) pairs in the order of dlib's 5-point model: points 0-1
    are the corners of one eye, 2-3 of the other, 4 is the nose.
    """

    points: tuple[tuple[float, float], ...]

    @property
    def eye_centres(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The two eye centres, ordered left to right in the image."""
        p = self.points
        a = ((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2)
        b = ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2)
        return (a, b) if a[0] <= b[0] else (b, a)

    @property
    def nose(self) -> tuple[float, float]:
        return self.points[4]

    @property
    def inter_eye_distance(self) -> float:
        """Distance between the eye centres, in pixels."""
        (ax, ay), (bx, by) = self.eye_centres
        return math.hypot(bx - ax, by - ay)

    def to_list(self) -> list[list[float]]:
        return [[round(x, 1), round(y, 1)] for x, y in self.points]


@dataclass(frozen=True)
class QualityCheck:
    """One quality minimum a face was checked against, with the value measured.

    Attributes
    ----------
    name : str
        The measurement: ``"inter_eye_px"``, ``"sharpness"``, ``"yaw"`` or ``"roll_deg"``
        (the :class:`Quality` attribute of the same name holds the value).
    label : str
        What it measures, in plain words (with its unit).
    value : float
        The face's measurement.
    limit : float
        The minimum (``bound="min"``) or the largest absolute value allowed
        (``bound="max_abs"``), from the pipeline's settings.
    bound : {"min", "max_abs"}
        ``"min"``: passes when ``value >= limit``; ``"max_abs"``: when ``abs(value) <= limit``.
    passed : bool
    """

    name: str
    label: str
    value: float
    limit: float
    bound: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "value": round(self.value, 3),
                "limit": self.limit, "bound": self.bound, "passed": self.passed}


@dataclass(frozen=True)
class Quality:
    """Quality measurements of one face and whether they pass the minimums.

    Attributes
    ----------
    inter_eye_px : float
        Distance between eye centres in original pixels (bigger is better).
    sharpness : float
        Variance of the Laplacian of the grayscale aligned chip (bigger is sharper).
    yaw : float
        Landmark yaw estimate: offset of the nose from the eyes' midpoint along the
        eye line, over half the inter-eye distance. 0 is frontal, +-1 is a
        profile. A rough proxy, not an angle.
    roll_deg : float
        In-plane rotation of the eye line, in degrees.
    passed : bool
        True when every minimum is met.
    reasons : tuple of str
        One sentence per failed minimum; empty when ``passed``.
    checks : tuple of QualityCheck
        Every minimum checked, with its value and limit, in the order above
        (empty for a Quality built by hand).
    """

    inter_eye_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    passed: bool
    reasons: tuple[str, ...] = ()
    checks: tuple[QualityCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "inter_eye_px": round(self.inter_eye_px, 2),
            "sharpness": round(self.sharpness, 2),
            "yaw": round(self.yaw, 3),
            "roll_deg": round(self.roll_deg, 2),
            "passed": self.passed,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes
    ----------
    box : Box
        Where the detector found the face, in original-image pixels.
    confidence : float
        Detector score; higher is more face-like. Comparable within one detector only.
    landmarks : Landmarks
    quality : Quality
    chip : ndarray of shape (size, size, 3), uint8, or None
        The aligned face crop the embedder consumes (None when dropped to save memory).
    """

    box: Box
    confidence: float
    landmarks: Landmarks
    quality: Quality
    chip: npt.NDArray[np.uint8] | None = field(default=None, repr=False)

    def without_chip(self) -> Face:
        """A copy of this face without its pixel chip."""
        return Face(self.box, self.confidence, self.landmarks, self.quality, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_dict(),
            "confidence": round(self.confidence, 4),
            "landmarks": self.landmarks.to_list(),
            "quality": self.quality.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class Embedding:
    """A face template: a descriptor vector and the id of the model that made it.

    Templates from different models are never comparable; every comparison
    checks ``model_id``.

    Attributes
    ----------
    vector : ndarray of shape (dim,), float32
    model_id : str
        e.g. ``"dlib-resnet-v1"``.
    """

    vector: FloatArray = field(repr=False)
    model_id: str

    def __post_init__(self) -> None:
        vector = np.ascontiguousarray(self.vector, dtype=np.float32)
        vector.setflags(write=False)
        object.__setattr__(self, "vector", vector)

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "vector": [float(v) for v in self.vector]}


@dataclass(frozen=True, eq=False)
class EmbeddedFace:
    """A detected face together with its embedding."""

    face: Face
    embedding: Embedding

    def to_dict(self) -> dict[str, Any]:
        return {**self.face.to_dict(), "embedding": self.embedding.to_dict()}
