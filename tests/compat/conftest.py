"""face_recognition's test images, and the shim loaded once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import facetrust.compat.face_recognition as face_recognition

IMAGES = Path(__file__).parent.parent / "data" / "face_recognition"


@pytest.fixture(scope="session")
def images() -> Path:
    """The folder of face_recognition's seven test images."""
    return IMAGES


@pytest.fixture(scope="session")
def obama() -> np.ndarray[Any, Any]:
    return face_recognition.load_image_file(IMAGES / "obama.jpg")
