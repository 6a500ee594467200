"""face_recognition's test images, and the shim loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _pillow_truncation_flag_restored() -> Iterator[None]:
    """Importing the real face_recognition sets Pillow's LOAD_TRUNCATED_IMAGES for the
    whole process; put it back after each test so later tests of facetrust's own
    decoder (a truncated JPEG is a CorruptImage) see Pillow's default."""
    import PIL.ImageFile

    yield
    PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False  # Pillow's default
