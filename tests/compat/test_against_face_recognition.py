"""The shim against face_recognition itself, where it is installed (``pip install --no-deps
face_recognition``): identical boxes and landmarks, descriptors within 1e-4, on real photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import facetrust.compat.face_recognition as shim

pytestmark = pytest.mark.slow  # runs the reference library beside the shim

reference: Any = pytest.importorskip("face_recognition")

DATA = Path(__file__).parent.parent / "data"
PHOTOS = sorted((DATA / "lfw").glob("*/*.jpg"))[::4] + sorted(
    (DATA / "face_recognition").glob("*.jpg")
)


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_same_boxes_landmarks_and_descriptors(photo: Path) -> None:
    image = reference.load_image_file(photo)
    assert np.array_equal(shim.load_image_file(photo), image)
    boxes = reference.face_locations(image)
    assert shim.face_locations(image) == boxes
    assert shim.face_landmarks(image, boxes, model="small") == reference.face_landmarks(
        image, boxes, model="small"
    )
    expected = reference.face_encodings(image, boxes)
    found = shim.face_encodings(image, boxes)
    assert len(found) == len(expected)
    for ours, theirs in zip(found, expected, strict=True):
        assert ours.shape == theirs.shape == (128,)
        assert ours.dtype == theirs.dtype
        assert np.abs(ours - theirs).max() < 1e-4


def test_same_68_point_landmarks_and_large_model_descriptors() -> None:
    image = reference.load_image_file(DATA / "face_recognition" / "biden.jpg")
    assert shim.face_landmarks(image) == reference.face_landmarks(image)
    ours = shim.face_encodings(image, model="large")
    theirs = reference.face_encodings(image, model="large")
    assert np.abs(np.array(ours) - np.array(theirs)).max() < 1e-4


def test_same_errors_for_bad_input(tmp_path: Path) -> None:
    gray = np.zeros((50, 50), np.uint8)
    cases = [
        lambda m: m.load_image_file(tmp_path / "missing.jpg"),
        lambda m: m.face_locations(np.zeros((50, 50, 3), np.float64)),
        lambda m: m.face_landmarks(gray, [(0, 40, 40, 0)], model="tiny"),
        lambda m: m.face_encodings(gray, [(0, 40, 40, 0)]),
        lambda m: m.face_distance(np.zeros(128), np.zeros(128)),
    ]
    for case in cases:
        with pytest.raises(Exception) as theirs:
            case(reference)
        with pytest.raises(Exception) as ours:
            case(shim)
        assert type(ours.value) is type(theirs.value)
