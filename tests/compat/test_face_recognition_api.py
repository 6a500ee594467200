"""The shim gives what face_recognition 1.3.0 gives, on face_recognition's own test images.

The expected boxes and points are the values face_recognition's suite asserts
for these images; descriptors are checked against dlib's own encoder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import PIL
import PIL.ImageFile
import pytest

import facetrust
import facetrust.compat.face_recognition as face_recognition
from facetrust.compat.face_recognition import api
from facetrust.errors import CorruptImage
from facetrust.models.dlib_backend import model_path

Image = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def dlib_encoder() -> Any:
    return dlib.face_recognition_model_v1(str(model_path("resnet")))


def test_package_exports_face_recognition_public_api() -> None:
    assert sorted(face_recognition.__all__) == [
        "batch_face_locations",
        "compare_faces",
        "face_distance",
        "face_encodings",
        "face_landmarks",
        "face_locations",
        "load_image_file",
    ]
    assert face_recognition.api is api


# load_image_file


def test_load_image_file_gives_rgb_uint8(images: Path) -> None:
    image = face_recognition.load_image_file(str(images / "obama.jpg"))
    assert image.shape == (1137, 910, 3)
    assert image.dtype == np.uint8


def test_load_image_file_converts_32bit_png_to_rgb(images: Path) -> None:
    assert face_recognition.load_image_file(images / "32bit.png").shape == (1200, 626, 3)


def test_load_image_file_mode_l_gives_grayscale(images: Path) -> None:
    assert face_recognition.load_image_file(images / "obama.jpg", mode="L").shape == (1137, 910)


def test_load_image_file_reads_file_objects(images: Path) -> None:
    with (images / "biden.jpg").open("rb") as handle:
        assert face_recognition.load_image_file(handle).ndim == 3


def test_load_image_file_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        face_recognition.load_image_file(tmp_path / "missing.jpg")


def test_load_image_file_not_an_image_raises_pil_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(PIL.UnidentifiedImageError):
        face_recognition.load_image_file(text)


def test_load_image_file_accepts_truncated_files_without_changing_pil_globally(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # face_recognition itself, when imported by another test, sets it process-wide.
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((images / "obama.jpg").read_bytes()[:150_000])
    assert face_recognition.load_image_file(truncated).shape == (1137, 910, 3)
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


def _pillow_with_truncation_allowed(data: bytes) -> Image:
    """What face_recognition itself gives: Pillow with LOAD_TRUNCATED_IMAGES set."""
    previous = PIL.ImageFile.LOAD_TRUNCATED_IMAGES
    PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        return np.array(PIL.Image.open(io.BytesIO(data)).convert("RGB"))
    finally:
        PIL.ImageFile.LOAD_TRUNCATED_IMAGES = previous


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_image_file_gives_face_recognitions_pixels_for_a_truncated_file(
    images: Path, fmt: str
) -> None:
    encoded = io.BytesIO()
    PIL.Image.open(images / "obama.jpg").save(encoded, fmt)
    for cut in (0.3, 0.7, 1.0):  # the missing part as face_recognition fills it
        data = encoded.getvalue()[: int(len(encoded.getvalue()) * cut)]
        np.testing.assert_array_equal(face_recognition.load_image_file(io.BytesIO(data)),
                                      _pillow_with_truncation_allowed(data))
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_load_image_file_never_sets_pillows_process_wide_truncation_flag_for_a_jpeg(
    images: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((images / "obama.jpg").read_bytes()[:150_000])
    stop = threading.Event()
    seen: set[bool] = set()

    def watch() -> None:  # another thread, as a web server's would decode
        while not stop.is_set():
            seen.add(PIL.ImageFile.LOAD_TRUNCATED_IMAGES)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for _ in range(30):
            face_recognition.load_image_file(truncated)
    finally:
        stop.set()
        thread.join()
    assert seen == {False}


def test_facetrust_refuses_a_truncated_jpeg_while_the_shim_decodes_truncated_files(
    images: Path, tmp_path: Path
) -> None:
    # Pillow's LOAD_TRUNCATED_IMAGES is one flag for the whole process: set by the
    # shim in one thread, it would make facetrust's decoder in another accept the cut file.
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((images / "obama.jpg").read_bytes()[:150_000])
    stop = threading.Event()
    shim_loads: list[tuple[int, ...]] = []

    def shim() -> None:
        while not stop.is_set():
            shim_loads.append(face_recognition.load_image_file(truncated).shape)

    thread = threading.Thread(target=shim)
    thread.start()
    accepted = refused = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline or len(shim_loads) < 20:
            try:
                facetrust.load_image(truncated)
                accepted += 1
            except CorruptImage:
                refused += 1
    finally:
        stop.set()
        thread.join()
    assert accepted == 0, f"{accepted} of {accepted + refused} loads accepted the cut JPEG"
    assert refused > 20 and set(shim_loads) == {(1137, 910, 3)}


# face_locations


def test_raw_face_locations_gives_dlib_rectangles(obama: Image) -> None:
    found = api._raw_face_locations(obama)
    assert len(found) == 1
    assert (found[0].top(), found[0].bottom()) == (142, 409)


def test_raw_face_locations_on_32bit_png(images: Path) -> None:
    found = api._raw_face_locations(face_recognition.load_image_file(images / "32bit.png"))
    assert [(r.top(), r.bottom()) for r in found] == [(290, 558)]


def test_face_locations_are_top_right_bottom_left(obama: Image) -> None:
    assert face_recognition.face_locations(obama) == [(142, 617, 409, 349)]


def test_face_locations_are_clipped_to_the_image(images: Path) -> None:
    left_cut = face_recognition.load_image_file(images / "obama_partial_face.jpg")
    right_cut = face_recognition.load_image_file(images / "obama_partial_face2.jpg")
    assert face_recognition.face_locations(left_cut) == [(142, 191, 365, 0)]
    assert face_recognition.face_locations(right_cut) == [(142, 551, 409, 349)]


def test_face_locations_upsample_zero_and_grayscale(obama: Image, images: Path) -> None:
    gray = face_recognition.load_image_file(images / "obama.jpg", mode="L")
    assert face_recognition.face_locations(gray) == [(142, 617, 409, 349)]
    assert len(face_recognition.face_locations(obama, number_of_times_to_upsample=0)) == 1


def test_face_locations_of_an_image_without_faces_is_empty() -> None:
    assert face_recognition.face_locations(np.zeros((120, 160, 3), np.uint8)) == []


def test_face_locations_rejects_float_images_as_dlib_does() -> None:
    with pytest.raises(RuntimeError, match="Unsupported image type"):
        face_recognition.face_locations(np.zeros((120, 160, 3), np.float32))


def test_cnn_face_locations_give_mmod_rects_with_confidence(obama: Image) -> None:
    found = api._raw_face_locations(obama, number_of_times_to_upsample=0, model="cnn")
    assert len(found) == 1
    assert (found[0].rect.top(), found[0].rect.bottom()) == (154, 390)
    assert found[0].confidence > 0.5
    assert face_recognition.face_locations(obama, 0, model="cnn") == [(154, 611, 390, 375)]


def test_batch_face_locations_equal_one_call_per_image(images: Path) -> None:
    # Small images keep the CNN quick; the batch must give what single calls give.
    lfw = Path(__file__).parent.parent / "data" / "lfw"
    batch = [face_recognition.load_image_file(p) for p in sorted(lfw.glob("*/*_0001.jpg"))[:3]]
    expected = [face_recognition.face_locations(image, 0, model="cnn") for image in batch]
    assert face_recognition.batch_face_locations(batch, 0, batch_size=2) == expected
    raw = api._raw_face_locations_batched(batch, number_of_times_to_upsample=0)
    assert len(raw) == 3
    assert all(len(found) == 1 for found in expected)


# landmarks


@pytest.mark.slow  # loads the 68-point landmark model
def test_raw_face_landmarks_gives_68_points(obama: Image) -> None:
    shapes = api._raw_face_landmarks(obama)
    assert len(shapes) == 1
    assert shapes[0].num_parts == 68
    assert (shapes[0].parts()[10].x, shapes[0].parts()[10].y) == (552, 399)


def test_face_landmarks_large_names_face_recognition_features(obama: Image) -> None:
    landmarks = face_recognition.face_landmarks(obama)
    assert set(landmarks[0]) == {
        "chin",
        "left_eyebrow",
        "right_eyebrow",
        "nose_bridge",
        "nose_tip",
        "left_eye",
        "right_eye",
        "top_lip",
        "bottom_lip",
    }
    assert landmarks[0]["chin"] == [
        (369, 220), (372, 254), (378, 289), (384, 322), (395, 353), (414, 382),
        (437, 407), (464, 424), (495, 428), (527, 420), (552, 399), (576, 372),
        (594, 344), (604, 314), (610, 282), (613, 250), (615, 219),
    ]  # fmt: skip
    sizes = {name: len(points) for name, points in landmarks[0].items()}
    assert sizes == {
        "chin": 17,
        "left_eyebrow": 5,
        "right_eyebrow": 5,
        "nose_bridge": 4,
        "nose_tip": 5,
        "left_eye": 6,
        "right_eye": 6,
        "top_lip": 12,
        "bottom_lip": 12,
    }


@pytest.mark.slow  # loads the 68-point landmark model
def test_face_landmarks_lips_close_round_both_contours(obama: Image) -> None:
    shape = api._raw_face_landmarks(obama)[0]
    points = [(p.x, p.y) for p in shape.parts()]
    landmarks = face_recognition.face_landmarks(obama, face_recognition.face_locations(obama))[0]
    assert landmarks["top_lip"][:7] == points[48:55]
    assert landmarks["top_lip"][7:] == [points[i] for i in (64, 63, 62, 61, 60)]
    assert landmarks["bottom_lip"][6:] == [points[i] for i in (48, 60, 67, 66, 65, 64)]


def test_face_landmarks_small_model(obama: Image) -> None:
    landmarks = face_recognition.face_landmarks(obama, model="small")
    assert set(landmarks[0]) == {"nose_tip", "left_eye", "right_eye"}
    assert landmarks[0]["nose_tip"] == [(496, 295)]
    assert len(landmarks[0]["left_eye"]) == len(landmarks[0]["right_eye"]) == 2


def test_face_landmarks_unknown_model_raises_value_error(obama: Image) -> None:
    with pytest.raises(ValueError, match="Supported models are"):
        face_recognition.face_landmarks(obama, model="medium")


def test_face_landmarks_without_faces_is_empty() -> None:
    assert face_recognition.face_landmarks(np.zeros((100, 100, 3), np.uint8)) == []


@pytest.mark.slow  # loads the 68-point landmark model
def test_large_landmark_model_loads_only_when_asked(images: Path) -> None:
    # A child process records every shape predictor dlib is asked to load.
    script = textwrap.dedent(
        f"""
        import dlib
        loaded = []
        real = dlib.shape_predictor
        def spy(path):
            loaded.append(path.rsplit("/", 1)[-1])
            return real(path)
        dlib.shape_predictor = spy
        import facetrust.compat.face_recognition as fr
        image = fr.load_image_file({str(images / "obama.jpg")!r})
        fr.face_encodings(image)
        fr.face_landmarks(image, model="small")
        print(loaded)
        fr.face_landmarks(image)
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    before, after = result.stdout.splitlines()
    assert before == "['shape_predictor_5_face_landmarks.dat']"
    assert after == (
        "['shape_predictor_5_face_landmarks.dat', 'shape_predictor_68_face_landmarks.dat']"
    )


# encodings


def test_face_encodings_equal_dlib_descriptors(obama: Image, dlib_encoder: Any) -> None:
    encodings = face_recognition.face_encodings(obama)
    assert len(encodings) == 1
    assert encodings[0].shape == (128,)
    assert encodings[0].dtype == np.float64
    shape = api._raw_face_landmarks(obama, model="small")[0]
    reference = np.array(dlib_encoder.compute_face_descriptor(obama, shape, 1))
    assert np.abs(encodings[0] - reference).max() < 1e-4


@pytest.mark.slow  # a fresh process, with facetrust's own settings in its environment
@pytest.mark.parametrize("augmentation", ["mirror", "jitter"])
def test_face_encodings_ignore_facetrusts_test_time_augmentation(
    images: Path, obama: Image, dlib_encoder: Any, augmentation: str
) -> None:
    """FACETRUST_AUGMENTATION is facetrust's pipeline setting (averaged descriptors under
    their own model id); face_recognition has none, so the shim's descriptors stay dlib's."""
    script = textwrap.dedent(
        f"""
        import json
        import facetrust.compat.face_recognition as face_recognition
        image = face_recognition.load_image_file({str(images / "obama.jpg")!r})
        print(json.dumps([list(e) for e in face_recognition.face_encodings(image)]))
        """
    )
    env = {**os.environ, "FACETRUST_AUGMENTATION": augmentation}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    (encoding,) = np.asarray(json.loads(result.stdout))
    shape = api._raw_face_landmarks(obama, model="small")[0]
    reference = np.array(dlib_encoder.compute_face_descriptor(obama, shape, 1))
    assert np.abs(encoding - reference).max() < 1e-4


@pytest.mark.slow  # loads the 68-point landmark model
def test_face_encodings_large_model_equal_dlib_descriptors(obama: Image, dlib_encoder: Any) -> None:
    encodings = face_recognition.face_encodings(obama, model="large")
    assert len(encodings) == 1
    shape = api._raw_face_landmarks(obama, model="large")[0]
    reference = np.array(dlib_encoder.compute_face_descriptor(obama, shape, 1))
    assert np.abs(encodings[0] - reference).max() < 1e-4


def test_face_encodings_with_known_locations_keep_their_order(images: Path) -> None:
    obama = face_recognition.load_image_file(images / "obama.jpg")
    biden = face_recognition.load_image_file(images / "biden.jpg")
    # Two faces side by side in one image, given right one first.
    width = obama.shape[1]
    pair = np.zeros((max(obama.shape[0], biden.shape[0]), width + biden.shape[1], 3), np.uint8)
    pair[: obama.shape[0], :width] = obama
    pair[: biden.shape[0], width:] = biden
    (biden_box,) = face_recognition.face_locations(biden)
    shifted = (biden_box[0], biden_box[1] + width, biden_box[2], biden_box[3] + width)
    both = face_recognition.face_encodings(pair, [shifted, (142, 617, 409, 349)])
    alone = face_recognition.face_encodings(biden, [biden_box])[0]
    assert len(both) == 2
    assert np.abs(both[0] - alone).max() < 1e-4
    assert face_recognition.face_distance([both[1]], alone)[0] > 0.6


def test_face_encodings_with_jitter_use_dlib(obama: Image) -> None:
    plain = face_recognition.face_encodings(obama)[0]
    jittered = face_recognition.face_encodings(obama, num_jitters=2)
    assert len(jittered) == 1
    assert jittered[0].shape == (128,)
    assert 0 < np.linalg.norm(jittered[0] - plain) < 0.3


def test_face_encodings_empty_inputs_give_empty_lists(obama: Image) -> None:
    assert face_recognition.face_encodings(obama, known_face_locations=[]) == []
    assert face_recognition.face_encodings(np.zeros((100, 100, 3), np.uint8)) == []


def test_face_encodings_of_grayscale_raise_what_dlib_raises(images: Path) -> None:
    gray = face_recognition.load_image_file(images / "obama.jpg", mode="L")
    with pytest.raises(TypeError, match="compute_face_descriptor"):
        face_recognition.face_encodings(gray)


def test_face_encodings_of_non_contiguous_images_raise_what_dlib_raises(obama: Image) -> None:
    flipped = obama[:, ::-1]
    boxes = face_recognition.face_locations(np.ascontiguousarray(flipped))
    with pytest.raises(TypeError, match="compute_face_descriptor"):
        face_recognition.face_encodings(flipped, boxes)


# distances and comparisons


@pytest.fixture(scope="module")
def encodings(images: Path) -> dict[str, np.ndarray[Any, Any]]:
    names = ("obama", "obama2", "obama3", "biden")
    return {
        name: face_recognition.face_encodings(
            face_recognition.load_image_file(images / f"{name}.jpg")
        )[0]
        for name in names
    }


def test_face_distance_is_lower_for_the_same_person(
    encodings: dict[str, np.ndarray[Any, Any]],
) -> None:
    known = [encodings["obama2"], encodings["obama3"], encodings["biden"]]
    distances = face_recognition.face_distance(known, encodings["obama"])
    assert type(distances) is np.ndarray
    assert distances.shape == (3,)
    assert distances[0] <= 0.6 and distances[1] <= 0.6 and distances[2] > 0.6


def test_face_distance_of_no_faces_is_an_empty_array(
    encodings: dict[str, np.ndarray[Any, Any]],
) -> None:
    for empty in ([], np.array([])):
        distances = face_recognition.face_distance(empty, encodings["biden"])
        assert type(distances) is np.ndarray
        assert distances.shape == (0,)


def test_face_distance_of_one_encoding_instead_of_a_list_raises(
    encodings: dict[str, np.ndarray[Any, Any]],
) -> None:
    with pytest.raises(np.exceptions.AxisError):
        face_recognition.face_distance(encodings["obama"], encodings["biden"])


def test_compare_faces_gives_a_list_of_matches(encodings: dict[str, np.ndarray[Any, Any]]) -> None:
    known = [encodings["obama2"], encodings["obama3"], encodings["biden"]]
    matches = face_recognition.compare_faces(known, encodings["obama"])
    assert type(matches) is list
    assert matches == [True, True, False]
    assert face_recognition.compare_faces(known, encodings["obama"], tolerance=0.0) == [
        False,
        False,
        False,
    ]


def test_compare_faces_of_no_faces_is_an_empty_list(
    encodings: dict[str, np.ndarray[Any, Any]],
) -> None:
    assert face_recognition.compare_faces([], encodings["biden"]) == []
    assert face_recognition.compare_faces(np.array([]), encodings["biden"]) == []


# module attributes face_recognition exposes


def test_model_objects_and_paths_are_module_attributes() -> None:
    assert api.predictor_5_point_model.endswith("shape_predictor_5_face_landmarks.dat")
    assert api.face_detector is api.face_detector
    assert callable(api.pose_predictor_5_point)
    with pytest.raises(AttributeError):
        _ = api.no_such_model
