"""The face_recognition shim's CNN detector: ONNX Runtime where it computes as dlib does."""

from __future__ import annotations

import numpy as np
import pytest

import facetrust.compat.face_recognition as face_recognition
from facetrust.compat.face_recognition import api


def test_shim_sends_tiny_and_odd_images_to_dlib() -> None:
    # dlib refuses a 5x5 image with its own RuntimeError; the shim lets it.
    with pytest.raises(RuntimeError, match="Filter windows must be small enough"):
        face_recognition.face_locations(np.zeros((5, 5, 3), np.uint8), 0, model="cnn")
    assert face_recognition.face_locations(np.zeros((20, 20, 3), np.uint8), model="cnn") == []
    with pytest.raises(RuntimeError, match="Unsupported image type"):
        face_recognition.face_locations(np.zeros((50, 50, 3), np.float32), model="cnn")
    with pytest.raises(RuntimeError, match="same dimensions"):
        api._raw_face_locations_batched(
            [np.zeros((40, 40, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)]
        )
