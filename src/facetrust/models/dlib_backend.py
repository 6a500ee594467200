"""dlib models with the weights of the ``face_recognition_models`` package.

Weights are read from site-packages, never downloaded. Each object loads its
weights on first use, so importing facetrust stays cheap. dlib's detectors
are not safe to share between threads: give each worker its own instance.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..faces import Box, Landmarks
from .base import Detection

#: The descriptor network of ``dlib_face_recognition_resnet_model_v1.dat``.
DLIB_RESNET_MODEL_ID = "dlib-resnet-v1"

WEIGHT_FILES = {
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
    # iBUG 300-W terms (non-commercial); only facetrust.compat loads it, when asked.
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
}


def model_path(kind: str) -> Path:
    """Path of one of the ``face_recognition_models`` weight files.

    ``kind`` is one of ``"landmarks5"``, ``"resnet"``, ``"mmod"``, ``"landmarks68"``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The face_recognition_models package is not installed. "
            "Install it with: pip install face_recognition_models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHT_FILES[kind]
    if not path.is_file():
        raise ModelError(
            f"Model weights {path} are missing. Reinstall face_recognition_models "
            "(pip install --force-reinstall face_recognition_models)."
        )
    return path


def import_dlib() -> Any:
    """The ``dlib`` module; :class:`~facetrust.errors.ModelError` saying how to install it."""
    try:
        import dlib
    except ImportError as error:
        raise ModelError(
            f"dlib could not be imported ({error}). Install it with: pip install dlib-bin"
        ) from None
    return dlib


def load_dlib_model(factory_name: str, path: Path) -> Any:
    """``dlib.<factory_name>(path)``; a :class:`~facetrust.errors.ModelError` on bad weights."""
    try:
        return getattr(import_dlib(), factory_name)(str(path))
    except RuntimeError as error:
        raise ModelError(
            f"Could not load model weights from {path}: {error}. The file may be "
            "truncated or corrupt; reinstall face_recognition_models."
        ) from None


def _rectangle(box: Box) -> Any:
    return import_dlib().rectangle(
        int(round(box.left)), int(round(box.top)), int(round(box.right)), int(round(box.bottom))
    )


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (built into dlib, no weight file)."""

    name = "dlib-hog"

    def __init__(self) -> None:
        self._detector: Any = None

    def detect(self, image: npt.NDArray[np.uint8], upsample: int = 0) -> list[Detection]:
        if self._detector is None:
            self._detector = import_dlib().get_frontal_face_detector()
        rects, scores, _ = self._detector.run(image, upsample, 0.0)
        return [
            Detection(Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]


class CnnDetector:
    """dlib's MMOD CNN face detector: slower on CPU, finds more small and turned faces."""

    name = "dlib-mmod"

    def __init__(self, weights: Path | None = None) -> None:
        self._weights = weights
        self._detector: Any = None

    def detect(self, image: npt.NDArray[np.uint8], upsample: int = 0) -> list[Detection]:
        if self._detector is None:
            self._detector = load_dlib_model(
                "cnn_face_detection_model_v1", self._weights or model_path("mmod")
            )
        found = self._detector(image, upsample)
        return [
            Detection(
                Box(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1),
                float(d.confidence),
            )
            for d in found
        ]


class DlibLandmarker:
    """dlib's 5-point shape predictor and its face-chip alignment."""

    name = "dlib-landmarks5"

    def __init__(self, weights: Path | None = None) -> None:
        self._weights = weights
        self._predictor: Any = None

    def _shape(self, image: npt.NDArray[np.uint8], box: Box) -> Any:
        if self._predictor is None:
            self._predictor = load_dlib_model(
                "shape_predictor", self._weights or model_path("landmarks5")
            )
        return self._predictor(image, _rectangle(box))

    def locate(self, image: npt.NDArray[np.uint8], box: Box) -> Landmarks:
        shape = self._shape(image, box)
        return Landmarks(tuple((float(p.x), float(p.y)) for p in shape.parts()))

    def align(
        self,
        image: npt.NDArray[np.uint8],
        box: Box,
        landmarks: Landmarks,
        size: int,
        padding: float,
    ) -> npt.NDArray[np.uint8]:
        dlib = import_dlib()
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks.points]
        shape = dlib.full_object_detection(_rectangle(box), points)
        chip: npt.NDArray[np.uint8] = dlib.get_face_chip(image, shape, size, padding)
        return chip


class DlibResnetEmbedder:
    """dlib's ResNet-34-like metric network: 150x150 chips to 128-d descriptors.

    Descriptors are compared with Euclidean distance; dlib documents 0.6 as
    the same-person threshold it was trained for. Runs on one core per
    process whatever the batch size, so parallelise with processes.
    """

    model_id = DLIB_RESNET_MODEL_ID
    backend = "dlib"
    chip_size = 150
    chip_padding = 0.25
    dimension = 128

    def __init__(self, weights: Path | None = None) -> None:
        self._weights = weights
        self._model: Any = None

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._model is None:
            self._model = load_dlib_model(
                "face_recognition_model_v1", self._weights or model_path("resnet")
            )
        descriptors = self._model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(d) for d in descriptors], dtype=np.float32)
