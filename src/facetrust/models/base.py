"""The interfaces every model backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..faces import Box, Landmarks


@dataclass(frozen=True)
class Detection:
    """A box found by a detector, in the coordinates of the image it was given."""

    box: Box
    confidence: float


@runtime_checkable
class Detector(Protocol):
    """Finds face boxes. Not thread-safe: use one instance per worker."""

    name: str

    def detect(self, image: npt.NDArray[np.uint8], upsample: int = 0) -> list[Detection]:
        """Faces in ``image`` (grayscale (h, w) or RGB (h, w, 3), uint8).

        ``upsample`` doubles the image that many times first, to find smaller faces.
        """
        ...


@runtime_checkable
class Landmarker(Protocol):
    """Places landmarks inside a box and cuts the aligned chip an embedder expects."""

    name: str

    def locate(self, image: npt.NDArray[np.uint8], box: Box) -> Landmarks:
        """Landmarks of the face in ``box`` of the RGB ``image``."""
        ...

    def align(
        self,
        image: npt.NDArray[np.uint8],
        box: Box,
        landmarks: Landmarks,
        size: int,
        padding: float,
    ) -> npt.NDArray[np.uint8]:
        """The aligned RGB chip of shape (size, size, 3)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns aligned chips into descriptors.

    Attributes
    ----------
    model_id : str
        Identifies the network and weights; templates with different ids are
        never compared. Backends running the same network share the id.
    backend : str
        What runs the network (``"dlib"``, ``"onnxruntime"``), for reporting only.
    chip_size, chip_padding :
        The alignment the network was trained with.
    dimension : int
        Length of each descriptor.
    """

    model_id: str
    backend: str
    chip_size: int
    chip_padding: float
    dimension: int

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Descriptors of shape (len(chips), dimension), float32."""
        ...
