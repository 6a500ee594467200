"""The CNN detector on ONNX Runtime gives dlib's boxes: checked against dlib's own detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlib
import numpy as np
import PIL.Image
import pytest

from facetrust import FacePipeline, Settings
from facetrust.errors import InvalidParameter, ModelError
from facetrust.faces import Box
from facetrust.models.dlib_backend import CnnDetector, HogDetector, model_path
from facetrust.models.mmod_onnx import (
    MmodOnnxDetector,
    OnnxMmodDetector,
    convert_dlib_mmod,
    read_mmod_network,
    tile_levels,
)
from facetrust.models.onnx_backend import OnnxResnetEmbedder, weights_sha256
from facetrust.models.selection import make_detector

pytestmark = pytest.mark.slow  # the CNN detector on dlib and on ONNX Runtime

DATA = Path(__file__).parent.parent / "data"
LFW = sorted((DATA / "lfw").glob("*/*_0001.jpg"))[:4] + [
    DATA / "multi_face" / "Vicente_Fox_0002.jpg"
]
#: Every sample photo: LFW portraits, a turned face, a group, face_recognition's photos.
PHOTOS = (
    sorted((DATA / "lfw").glob("*/*.jpg"))
    + sorted((DATA / "hard_faces").glob("*/*.jpg"))
    + [DATA / "multi_face" / "Vicente_Fox_0002.jpg"]
    + sorted((DATA / "face_recognition").glob("*.jpg"))
)


@pytest.fixture(scope="module")
def dlib_cnn() -> Any:
    return dlib.cnn_face_detection_model_v1(str(model_path("mmod")))


@pytest.fixture(scope="module")
def onnx_cnn() -> MmodOnnxDetector:
    return MmodOnnxDetector()


def rgb(path: Path) -> np.ndarray[Any, Any]:
    return np.array(PIL.Image.open(path).convert("RGB"))


def boxes(detections: Any) -> list[tuple[int, int, int, int]]:
    return [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in detections]


def test_reads_dlib_mmod_face_detector() -> None:
    network = read_mmod_network(model_path("mmod"))
    assert network.window == (80, 80)
    assert 0.3 < network.iou_threshold < 0.4
    assert network.covered_threshold == 1.0
    assert (network.padding, network.outer_padding) == (10, 11)
    convolutions = [layer for layer in network.layers if type(layer).__name__ == "Conv"]
    assert [c.weights.shape[0] for c in convolutions] == [16, 32, 32, 45, 45, 45, 1]
    assert [c.stride for c in convolutions] == [(2, 2)] * 3 + [(1, 1)] * 4


def test_reading_a_truncated_file_raises_model_error(tmp_path: Path) -> None:
    truncated = tmp_path / "mmod.dat"
    truncated.write_bytes(model_path("mmod").read_bytes()[:5000])
    with pytest.raises(ModelError, match="mmod.dat"):
        read_mmod_network(truncated)


def test_tile_levels_stack_the_pyramid_without_overlap() -> None:
    rects, rows, cols = tile_levels(250, 250, padding=10, outer_padding=11)
    assert rects[0] == (11, 11, 260, 260)
    assert cols == 250 + 22
    sizes = [(r - left + 1, b - t + 1) for left, t, r, b in rects]
    assert sizes[1] == (208, 208)  # floor(250 * 5 / 6)
    for index, (left, top, right, bottom) in enumerate(rects):
        assert 0 <= left <= right < cols and 0 <= top <= bottom < rows
        for other in rects[index + 1 :]:
            assert max(left, other[0]) > min(right, other[2]) or max(top, other[1]) > min(
                bottom, other[3]
            )
    assert tile_levels(0, 10, 10, 11) == ([], 0, 0)


@pytest.mark.parametrize("photo", LFW, ids=lambda p: p.name)
def test_boxes_equal_dlib_without_upsampling(photo: Path, dlib_cnn: Any, onnx_cnn: Any) -> None:
    image = rgb(photo)
    theirs, ours = dlib_cnn(image, 0), onnx_cnn(image, 0)
    assert boxes(ours) == boxes(theirs)
    for mine, dlibs in zip(ours, theirs, strict=True):
        assert abs(mine.confidence - dlibs.confidence) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("photo", LFW[:2], ids=lambda p: p.name)
def test_boxes_equal_dlib_upsampled_once(photo: Path, dlib_cnn: Any, onnx_cnn: Any) -> None:
    image = rgb(photo)
    assert boxes(onnx_cnn(image, 1)) == boxes(dlib_cnn(image, 1))


def test_boxes_equal_dlib_on_a_face_cut_by_the_border(
    dlib_cnn: Any, onnx_cnn: Any
) -> None:
    image = rgb(DATA / "face_recognition" / "obama_partial_face.jpg")[::2, ::2].copy()
    assert boxes(onnx_cnn(image, 0)) == boxes(dlib_cnn(image, 0))


def test_batches_equal_dlib_batches(dlib_cnn: Any, onnx_cnn: Any) -> None:
    batch = [rgb(p) for p in LFW[:3]]
    theirs = dlib_cnn(batch, 0, batch_size=2)
    ours = onnx_cnn(batch, 0, batch_size=2)
    assert [boxes(found) for found in ours] == [boxes(found) for found in theirs]


def test_grayscale_equals_dlib(dlib_cnn: Any, onnx_cnn: Any) -> None:
    gray = np.array(PIL.Image.open(LFW[0]).convert("L"))
    assert boxes(onnx_cnn(gray, 0)) == boxes(dlib_cnn(gray, 0))


def iou(a: Box, b: Box) -> float:
    inner = max(0.0, min(a.right, b.right) - max(a.left, b.left)) * max(
        0.0, min(a.bottom, b.bottom) - max(a.top, b.top)
    )
    return inner / (a.area + b.area - inner)


@pytest.fixture(scope="module")
def dlib_detector() -> CnnDetector:
    return CnnDetector()


@pytest.fixture(scope="module")
def onnx_detector(tmp_path_factory: pytest.TempPathFactory) -> OnnxMmodDetector:
    return OnnxMmodDetector(threads=1, cache_dir=tmp_path_factory.mktemp("mmod-cache"))


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_detector_finds_dlibs_boxes_on_every_sample_photo(
    photo: Path, dlib_detector: CnnDetector, onnx_detector: OnnxMmodDetector
) -> None:
    gray = np.array(PIL.Image.open(photo).convert("L"))
    theirs, ours = dlib_detector.detect(gray), onnx_detector.detect(gray)
    assert len(ours) == len(theirs)
    for mine, dlibs in zip(ours, theirs, strict=True):
        assert iou(mine.box, dlibs.box) >= 0.99
        assert mine.confidence == pytest.approx(dlibs.confidence, abs=1e-4)


def test_detector_on_a_tiny_image_finds_nothing(onnx_detector: OnnxMmodDetector) -> None:
    assert onnx_detector.detect(np.zeros((20, 20), np.uint8)) == []


def test_conversion_is_cached_by_the_weights_hash(tmp_path: Path) -> None:
    first = convert_dlib_mmod(cache_dir=tmp_path)
    assert weights_sha256(model_path("mmod")) in first.name
    modified = first.stat().st_mtime_ns
    assert convert_dlib_mmod(cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == modified


def test_cnn_setting_runs_the_onnx_detector_with_dlibs_name() -> None:
    detector = make_detector("cnn", Settings(embedder_threads=1))
    assert isinstance(detector, OnnxMmodDetector)
    assert detector.name == "dlib-mmod"
    assert isinstance(make_detector("hog"), HogDetector)
    assert FacePipeline(Settings(detector="cnn")).detector.name == "dlib-mmod"
    with pytest.raises(InvalidParameter, match="'hog', 'cnn'|hog, cnn"):
        make_detector("yolo")


@pytest.mark.parametrize("build", [MmodOnnxDetector, OnnxResnetEmbedder])
def test_onnx_models_refuse_a_negative_thread_count(build: Any) -> None:
    with pytest.raises(InvalidParameter, match="must be 0 \\(one per core\\) or more"):
        build(threads=-1)
