"""The few functions most users need: detect, embed, verify.

Each takes an image as a path, bytes, a binary file object or an RGB array,
and uses one pipeline per process (models loaded on first call).
"""

from __future__ import annotations

from functools import lru_cache

from .config import Settings
from .errors import errors_about
from .faces import EmbeddedFace, Face
from .images import ImageSource
from .matching import OperatingPoint, Verdict, compare
from .pipeline import DEFAULT_FACE_POLICY, FacePipeline, FacePolicy


@lru_cache(maxsize=4)
def default_pipeline(settings: Settings | None = None) -> FacePipeline:
    """The process's shared pipeline for ``settings`` (models load on first use)."""
    return FacePipeline(settings)


def detect_faces(image: ImageSource, settings: Settings | None = None) -> list[Face]:
    """Every face in ``image``, largest first, with box, landmarks, chip and quality."""
    return default_pipeline(settings).detect(image)


def embed_faces(image: ImageSource, settings: Settings | None = None) -> list[EmbeddedFace]:
    """Every face in ``image`` with its 128-d embedding, largest first."""
    return default_pipeline(settings).embed(image)


def verify(
    image_a: ImageSource,
    image_b: ImageSource,
    *,
    operating_point: str | OperatingPoint | None = None,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
    check_quality: bool = True,
    settings: Settings | None = None,
) -> Verdict:
    """Decide whether two photos show the same person (1:1).

    Parameters
    ----------
    image_a, image_b : image sources
    operating_point : str or OperatingPoint, optional
        Name from the calibration table (``facetrust.operating_points()``);
        the table's default when omitted.
    face_policy : "dominant", "single", "largest", "crop" or int
        Which face to use (:data:`facetrust.pipeline.FacePolicy`). ``"dominant"``
        takes the photo's clear subject and refuses a photo of several people
        with :class:`~facetrust.errors.MultipleFaces`; ``"crop"`` says the
        images already are face crops (no detection).
    check_quality : bool
        Refuse faces that fail the quality minimums (too small, blurred, turned).

    Returns
    -------
    Verdict
        ``match`` is ``distance <= threshold``; lower distance is more similar.
    """
    pipeline = default_pipeline(settings)
    with errors_about("image_a"):  # which photo was refused: ``error.field``
        a = pipeline.embed_one(image_a, face_policy, check_quality=check_quality)
    with errors_about("image_b"):
        b = pipeline.embed_one(image_b, face_policy, check_quality=check_quality)
    return compare(a.embedding, b.embedding, operating_point)
