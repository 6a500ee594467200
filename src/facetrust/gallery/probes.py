"""Probes: a face given to the gallery (photo or template) turned into a template.

A probe is embedded by the gallery's pipeline with the quality checks on; its
photo bytes are hashed for the audit log and kept only when an enrolment asks
to keep photos. Before any comparison a template is *protected*: rotated by
the gallery's template secret (:func:`facetrust.crypto.protect`), which keeps
distances and makes stored templates useless outside this gallery.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .. import crypto
from ..errors import FacetrustError
from ..faces import Embedding, Face
from ..images import ImageSource, read_image_file
from ..matching import OperatingPoint
from ..pipeline import FacePipeline, FacePolicy
from ..score_normalization import ScoreNormalizer

#: Anything accepted as a probe or enrolment face: an image, or a template
#: already computed (an :class:`~facetrust.faces.Embedding`).
FaceInput = ImageSource | Embedding


@dataclass(frozen=True)
class Probe:
    """A face read for a search or an enrolment.

    Attributes
    ----------
    embedding : Embedding
        The template (not yet protected).
    sha256 : str
        Hex SHA-256 of the photo bytes (of the array's or the template's bytes for
        a pixel array or a template).
    photo : bytes or None
        The encoded photo, when one was given as a file or bytes.
    face : Face or None
        The detected face (box in original-image pixels); None for a template.
    """

    embedding: Embedding
    sha256: str
    photo: bytes | None
    face: Face | None = None

    @property
    def model_id(self) -> str:
        """The embedding model of the template."""
        return self.embedding.model_id


def read_probe(pipeline: FacePipeline, face: FaceInput, face_policy: FacePolicy) -> Probe:
    """Embed ``face`` (quality checks on), or take it as is if it is a template.

    Raises
    ------
    NotAnImage, CorruptImage, ImageTooLarge, NoFaceFound, MultipleFaces, FaceQualityTooLow
        For a path, the message names the file.
    """
    if isinstance(face, Embedding):
        return Probe(face, hashlib.sha256(face.vector.tobytes()).hexdigest(), None)
    raw: bytes | None = None
    if isinstance(face, str | os.PathLike):
        # read once, within the byte cap (hashed and kept as read); errors name the file
        raw = read_image_file(face, pipeline.settings.max_bytes)
    elif isinstance(face, bytes | bytearray):
        raw = bytes(face)
    elif isinstance(face, np.ndarray):
        raw = np.ascontiguousarray(face).tobytes()
    try:
        embedded = pipeline.embed_one(
            face if raw is None or isinstance(face, np.ndarray) else raw,
            face_policy,
            check_quality=True,
        )
    except FacetrustError as error:
        if isinstance(face, str | os.PathLike):
            _name_file(error, os.fspath(face))
        raise
    digest = hashlib.sha256(raw).hexdigest() if raw is not None else ""
    photo = raw if not isinstance(face, np.ndarray) else None
    return Probe(embedded.embedding, digest, photo, embedded.face)


def _name_file(error: FacetrustError, path: str) -> None:
    """Make ``error``, raised for the bytes of the file at ``path``, name that file (one
    photo among several must be told apart); its class and other attributes stay."""
    message = str(error)
    if message.startswith("The image "):
        message = f"The file {path} " + message.removeprefix("The image ")
    else:
        message = f"{path}: {message}"
    error.args = (message, *error.args[1:])


def protected_normalizer(
    point: OperatingPoint, secret: bytes, dim: int
) -> ScoreNormalizer | None:
    """The point's score normalizer for templates protected with ``secret``, or None."""
    normalizer = point.score_normalizer()
    if normalizer is None:
        return None
    return normalizer.rotated(crypto.rotation_matrix(secret, dim))

