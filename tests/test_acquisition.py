"""Acquisition: pre-aligned crops, recovery on images that are mostly a face, face choice.

Crops are made at test time from the LFW sample photos (tests/data/lfw) in
each convention :mod:`facetrust.evaluation.crops` knows; non-faces are real
photos (tests/data/non_faces, see SOURCE.md) or generated (noise, text, wall).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from facetrust import FacePipeline, load_image
from facetrust.errors import InvalidParameter, MultipleFaces, NoFaceFound
from facetrust.evaluation.crops import CROP_CONVENTIONS, crop_conventions
from facetrust.pipeline import parse_face_policy, select_face

NON_FACES = Path(__file__).parent / "data" / "non_faces"

#: Same-person distances stay far below dlib's 0.6 when a crop is read right.
SAME_FACE_DISTANCE = 0.4

Image8 = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def crops(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> list[tuple[npt.NDArray[np.float32], dict[str, Image8]]]:
    """For one photo of five sample identities: its embedding and its crops."""
    made = []
    for paths in list(photos.values())[:5]:
        pixels = load_image(paths[0])
        embedded = pipeline.embed_one(pixels)
        made_crops = crop_conventions(pixels, embedded.face, pipeline.landmarker)
        made.append((embedded.embedding.vector, made_crops))
    return made


@pytest.mark.parametrize("convention", CROP_CONVENTIONS)
def test_a_face_crop_of_each_convention_is_read_without_detection(
    pipeline: FacePipeline,
    crops: list[tuple[npt.NDArray[np.float32], dict[str, Image8]]],
    convention: str,
) -> None:
    for reference, made in crops:
        face = pipeline.embed_one(made[convention], "crop")
        distance = float(np.linalg.norm(face.embedding.vector - reference))
        assert distance < SAME_FACE_DISTANCE, (convention, distance)
        assert face.face.quality.passed


@pytest.mark.parametrize("convention", CROP_CONVENTIONS)
def test_automatic_mode_recovers_the_face_of_each_crop_convention(
    pipeline: FacePipeline,
    crops: list[tuple[npt.NDArray[np.float32], dict[str, Image8]]],
    convention: str,
) -> None:
    for reference, made in crops:
        face = pipeline.embed_one(made[convention])
        distance = float(np.linalg.norm(face.embedding.vector - reference))
        assert distance < SAME_FACE_DISTANCE, (convention, distance)


def test_crop_policy_is_one_face_from_detect_and_embed(
    pipeline: FacePipeline, crops: list[tuple[npt.NDArray[np.float32], dict[str, Image8]]]
) -> None:
    chip = crops[0][1]["tight112"]
    (face,) = pipeline.detect(chip, "crop")
    assert face.box.width == pytest.approx(112, rel=0.3)
    (embedded,) = pipeline.embed(chip, "crop")
    assert embedded.embedding.vector.shape == (128,)


def _noise(size: int) -> Image8:
    return np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _text(size: int) -> Image8:
    page = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(page)
    for y in range(0, size, 14):
        draw.text((4, y), "The quick brown fox jumps over the lazy dog", fill="black")
    return np.asarray(page)


def _wall(size: int) -> Image8:
    rng = np.random.default_rng(size)
    paint = np.full((size, size, 3), (200, 190, 170), dtype=np.float64)
    return np.clip(paint + rng.normal(0, 4, paint.shape), 0, 255).astype(np.uint8)


def _photo(name: str, size: int | None) -> Image8:
    pixels = load_image(NON_FACES / name)
    if size is None:
        return pixels
    rows, cols = pixels.shape[:2]
    side = min(rows, cols)
    top, left = (rows - side) // 2, (cols - side) // 2
    square = pixels[top : top + side, left : left + side]
    return np.asarray(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("size", [112, 250])
@pytest.mark.parametrize(
    "make",
    [
        _noise,
        _text,
        _wall,
        lambda size: _photo("summer_palace_landscape.jpg", size),
        lambda size: _photo("chelsea_cat.jpg", size),
    ],
    ids=["noise", "text", "wall", "landscape", "cat"],
)
def test_recovery_refuses_what_is_not_a_face(
    pipeline: FacePipeline, make: object, size: int
) -> None:
    image = make(size)  # type: ignore[operator]
    assert pipeline.detect(image) == []
    with pytest.raises(NoFaceFound):
        pipeline.embed_one(image)


@pytest.mark.parametrize("name", ["summer_palace_landscape.jpg", "chelsea_cat.jpg"])
def test_whole_non_face_photos_are_refused(pipeline: FacePipeline, name: str) -> None:
    with pytest.raises(NoFaceFound):
        pipeline.embed_one(_photo(name, None))


def test_dominant_takes_the_face_the_photo_is_framed_on(
    pipeline: FacePipeline, multi_face_photo: Path
) -> None:
    """LFW's Vicente_Fox_0002: Fox at the centre, a second face behind him at the edge."""
    faces = pipeline.detect(multi_face_photo)
    assert len(faces) == 2
    chosen = pipeline.embed_one(multi_face_photo).face
    centre_x = (chosen.box.left + chosen.box.right) / 2
    assert 100 < centre_x < 150
    with pytest.raises(MultipleFaces, match="2 faces"):
        pipeline.embed_one(multi_face_photo, "single")


def test_dominant_refuses_two_people_side_by_side(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> None:
    left = load_image(photos["Serena_Williams"][0])
    right = load_image(photos["Venus_Williams"][0])
    pair = np.ascontiguousarray(np.hstack([left, right]))
    assert len(pipeline.detect(pair)) == 2
    with pytest.raises(MultipleFaces, match="cannot tell"):
        pipeline.embed_one(pair)


def test_dominant_takes_a_face_much_larger_than_the_others(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> None:
    """A subject in front: a second person shown at half the size, off the centre."""
    subject = load_image(photos["Kofi_Annan"][0])
    other = load_image(photos["Hu_Jintao"][0])
    canvas = np.full((500, 800, 3), 120, dtype=np.uint8)
    canvas[:, :500] = cv2.resize(subject, (500, 500), interpolation=cv2.INTER_CUBIC)
    canvas[125:375, 530:780] = other
    faces = pipeline.detect(canvas)
    assert len(faces) == 2
    assert faces[0].box.area >= 2.25 * faces[1].box.area
    chosen = pipeline.embed_one(canvas).face
    assert chosen.box == faces[0].box


def test_face_policies_parse_and_refuse_unknown_names() -> None:
    assert parse_face_policy("dominant") == "dominant"
    assert parse_face_policy(" crop ") == "crop"
    assert parse_face_policy("2") == 2
    with pytest.raises(InvalidParameter, match="'dominant', 'single', 'largest', 'crop'"):
        parse_face_policy("middle")
    with pytest.raises(NoFaceFound, match="face policy 'crop'"):
        select_face([], "dominant")


def test_crop_cannot_pick_among_detected_faces(
    pipeline: FacePipeline, multi_face_photo: Path
) -> None:
    with pytest.raises(InvalidParameter, match="whole image as one face"):
        select_face(pipeline.detect(multi_face_photo), "crop")
