"""Detection, landmarks, alignment and quality on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrust import FacePipeline, Settings, load_image
from facetrust.errors import FaceQualityTooLow, MultipleFaces, NoFaceFound


@pytest.fixture(scope="module")
def rgb(photos: dict[str, list[Path]]) -> np.ndarray:
    return load_image(photos["Colin_Powell"][0])


def test_every_sample_photo_has_one_face_of_passing_quality(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> None:
    for paths in photos.values():
        for path in paths:
            faces = pipeline.detect(path)
            assert len(faces) == 1, path
            face = faces[0]
            assert face.quality.passed, (path, face.quality.reasons)
            assert face.chip is not None and face.chip.shape == (150, 150, 3)
            assert len(face.landmarks.points) == 5
            # LFW deep-funneled photos are centred on the subject.
            cx = (face.box.left + face.box.right) / 2
            cy = (face.box.top + face.box.bottom) / 2
            assert 90 < cx < 160 and 90 < cy < 160, (path, face.box)


def test_both_faces_of_a_group_photo_are_found_largest_first(
    pipeline: FacePipeline, multi_face_photo: Path
) -> None:
    faces = pipeline.detect(multi_face_photo)
    assert len(faces) == 2
    assert faces[0].box.area >= faces[1].box.area
    with pytest.raises(MultipleFaces, match="2 faces"):
        pipeline.embed_one(multi_face_photo, "single")
    assert pipeline.embed_one(multi_face_photo, "largest").face.box == faces[0].box
    assert pipeline.embed_one(multi_face_photo, 1).face.box == faces[1].box


def test_boxes_and_landmarks_map_back_to_original_coordinates(
    pipeline: FacePipeline, rgb: np.ndarray
) -> None:
    """The photo is a known crop of a larger canvas: coordinates shift by the offset."""
    original = pipeline.faces_in_pixels(rgb)[0]
    dx, dy = 230, 110
    canvas = np.full((500, 620, 3), 90, dtype=np.uint8)
    canvas[dy : dy + 250, dx : dx + 250] = rgb
    found = pipeline.detect(canvas)
    assert len(found) == 1
    box = found[0].box
    # HOG windows sit on an 8-pixel cell grid in a scale pyramid, so a shifted
    # face can land up to a few pixels off the grid; landmarks refine within it.
    for got, want in zip(
        (box.left, box.top, box.right, box.bottom),
        (
            original.box.left + dx,
            original.box.top + dy,
            original.box.right + dx,
            original.box.bottom + dy,
        ),
        strict=True,
    ):
        assert abs(got - want) <= 6
    for (x, y), (ox, oy) in zip(found[0].landmarks.points, original.landmarks.points, strict=True):
        assert abs(x - (ox + dx)) <= 2 and abs(y - (oy + dy)) <= 2


def test_boxes_from_a_downscaled_detection_are_mapped_back(
    pipeline: FacePipeline, rgb: np.ndarray
) -> None:
    """A 1400x1100 canvas is detected at 640 px; the box must land on the face at full size."""
    original = pipeline.faces_in_pixels(rgb)[0]
    big = cv2.resize(rgb, (1000, 1000), interpolation=cv2.INTER_CUBIC)
    dx, dy = 300, 50
    canvas = np.full((1100, 1400, 3), 90, dtype=np.uint8)
    canvas[dy : dy + 1000, dx : dx + 1000] = big
    found = pipeline.detect(canvas)
    assert len(found) == 1
    expected = original.box.scaled(0.25, -dx * 0.25, -dy * 0.25)
    tolerance = 0.12 * expected.width
    box = found[0].box
    for got, want in zip(
        (box.left, box.top, box.right, box.bottom),
        (expected.left, expected.top, expected.right, expected.bottom),
        strict=True,
    ):
        assert abs(got - want) < tolerance
    # Landmarks are placed at full resolution, so they agree more closely.
    for (x, y), (ox, oy) in zip(found[0].landmarks.points, original.landmarks.points, strict=True):
        assert abs(x - (4 * ox + dx)) < 0.15 * 4 * original.quality.inter_eye_px
        assert abs(y - (4 * oy + dy)) < 0.15 * 4 * original.quality.inter_eye_px


def test_face_filling_the_whole_frame_is_found(pipeline: FacePipeline, rgb: np.ndarray) -> None:
    """A passport-style crop whose face touches the border needs the padded pass."""
    box = pipeline.faces_in_pixels(rgb)[0].box
    inset = 20
    tight = rgb[
        int(box.top) + inset : int(box.bottom) - inset,
        int(box.left) + inset : int(box.right) - inset,
    ]
    tight = cv2.resize(tight, (400, 400), interpolation=cv2.INTER_CUBIC)
    assert pipeline.detector.detect(cv2.cvtColor(tight, cv2.COLOR_RGB2GRAY), 0) == []
    faces = pipeline.detect(tight)
    assert len(faces) == 1
    assert faces[0].box.left < 0 or faces[0].box.right > 400  # the face spills over the border


def test_small_face_in_a_large_photo_needs_a_larger_detection_size(rgb: np.ndarray) -> None:
    canvas = np.full((2000, 3000, 3), 90, dtype=np.uint8)
    canvas[700:950, 1200:1450] = rgb
    faces = FacePipeline(Settings(detection_max_side=3000)).detect(canvas)
    assert len(faces) == 1
    assert 1200 < faces[0].box.left < faces[0].box.right < 1450


def test_image_without_a_face_is_a_failure_to_acquire(pipeline: FacePipeline) -> None:
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    assert pipeline.detect(gradient) == []
    with pytest.raises(NoFaceFound, match="failure to acquire"):
        pipeline.embed_one(gradient)


def test_blurred_face_fails_quality_with_the_reason(
    pipeline: FacePipeline, rgb: np.ndarray
) -> None:
    blurred = cv2.GaussianBlur(rgb, (0, 0), 4)
    faces = pipeline.detect(blurred)
    assert len(faces) == 1 and not faces[0].quality.passed
    with pytest.raises(FaceQualityTooLow, match="too blurred") as raised:
        pipeline.embed_one(blurred)
    # the error carries the face, and each check it was held to with value and limit
    failed = raised.value.face
    assert failed is not None and failed.chip is not None
    checks = {c.name: c for c in failed.quality.checks}
    assert list(checks) == ["inter_eye_px", "sharpness", "yaw", "roll_deg"]
    sharpness = checks["sharpness"]
    assert not sharpness.passed and sharpness.bound == "min"
    assert sharpness.value == failed.quality.sharpness < sharpness.limit
    assert sharpness.limit == pipeline.settings.min_sharpness
    assert checks["inter_eye_px"].passed and checks["yaw"].bound == "max_abs"
    assert pipeline.embed_one(blurred, check_quality=False).embedding.vector.shape == (128,)


def test_tiny_face_fails_quality_as_too_small(pipeline: FacePipeline, rgb: np.ndarray) -> None:
    small = cv2.resize(rgb, (90, 90), interpolation=cv2.INTER_AREA)
    faces = pipeline.detect(small)
    assert len(faces) == 1
    assert any("too small" in reason for reason in faces[0].quality.reasons)


def test_rotated_head_is_measured_as_roll(pipeline: FacePipeline, rgb: np.ndarray) -> None:
    upright = pipeline.faces_in_pixels(rgb)[0].quality.roll_deg
    matrix = cv2.getRotationMatrix2D((125, 125), 20, 1.0)  # counter-clockwise in the image
    turned = cv2.warpAffine(rgb, matrix, (250, 250), borderMode=cv2.BORDER_REPLICATE)
    faces = pipeline.detect(turned)
    assert len(faces) == 1
    assert faces[0].quality.roll_deg == pytest.approx(upright - 20, abs=4)


def test_cnn_detector_finds_the_same_faces(
    photos: dict[str, list[Path]], multi_face_photo: Path
) -> None:
    cnn = FacePipeline(Settings(detector="cnn"))
    assert cnn.detector.name == "dlib-mmod"
    assert len(cnn.detect(photos["Hu_Jintao"][0])) == 1
    assert len(cnn.detect(multi_face_photo)) == 2


def test_corrupt_model_weights_give_a_clear_error(tmp_path: Path, rgb: np.ndarray) -> None:
    from facetrust.errors import ModelError
    from facetrust.models.dlib_backend import DlibLandmarker, model_path

    broken = tmp_path / "shape_predictor_5_face_landmarks.dat"
    broken.write_bytes(model_path("landmarks5").read_bytes()[:1000])
    pipeline = FacePipeline(landmarker=DlibLandmarker(broken))
    with pytest.raises(ModelError, match=str(broken)):
        pipeline.detect(rgb)
