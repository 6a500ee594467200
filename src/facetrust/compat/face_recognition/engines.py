"""The models behind the face_recognition shim, each loaded on first use, once per process.

face_recognition loads all four of its models when it is imported. The shim
loads each one the first time a call needs it; in particular the 68-point
landmark model (iBUG 300-W terms, non-commercial) is read only when a caller
asks for ``model="large"`` landmarks or encodings.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ...config import Settings
from ...models.base import Embedder
from ...models.dlib_backend import import_dlib, load_dlib_model, model_path
from ...models.mmod_onnx import MmodOnnxDetector
from ...models.onnx_backend import onnxruntime_available
from ...models.selection import default_embedder

#: face_recognition's landmark model names and the weight files they mean.
LANDMARK_WEIGHTS = {"small": "landmarks5", "large": "landmarks68"}


def dlib_module() -> Any:
    """The ``dlib`` module (dlib-bin's wheel provides it; nothing is compiled)."""
    return import_dlib()


@functools.cache
def hog_detector() -> Any:
    """dlib's HOG frontal face detector, the one face_recognition's ``model="hog"`` runs."""
    return import_dlib().get_frontal_face_detector()


@functools.cache
def cnn_detector() -> Any:
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``)."""
    return load_dlib_model("cnn_face_detection_model_v1", model_path("mmod"))


@functools.cache
def onnx_cnn_detector() -> MmodOnnxDetector | None:
    """dlib's CNN detector with its network on ONNX Runtime (same boxes), or None without it."""
    return MmodOnnxDetector() if onnxruntime_available() else None


@functools.cache
def shape_predictor(model: str) -> Any:
    """dlib's landmark predictor: ``"small"`` is 5 points, ``"large"`` is 68 points."""
    return load_dlib_model("shape_predictor", model_path(LANDMARK_WEIGHTS[model]))


@functools.cache
def dlib_encoder() -> Any:
    """dlib's own descriptor network, used for what ONNX does not reproduce (jitter)."""
    return load_dlib_model("face_recognition_model_v1", model_path("resnet"))


@functools.cache
def embedder() -> Embedder:
    """The descriptor backend: ONNX Runtime when installed (same descriptors), else dlib.

    ``FACETRUST_EMBEDDER`` chooses the backend as everywhere in facetrust. The
    shim runs ONNX Runtime on one thread unless ``FACETRUST_EMBEDDER_THREADS``
    asks for more: face_recognition is single-threaded, its users scale with
    processes, and one face per call is faster on one thread than on several.
    ``FACETRUST_AUGMENTATION`` is not read: face_recognition has no test-time
    augmentation, so the shim's descriptors stay dlib's whatever facetrust's
    own pipeline averages.
    """
    settings = Settings.from_env()
    threads = settings.embedder_threads or 1
    return default_embedder(
        dataclasses.replace(settings, embedder_threads=threads, augmentation="none")
    )
