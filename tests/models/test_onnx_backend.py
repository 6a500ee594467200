"""The dlib descriptor network converted to ONNX gives dlib's descriptors.

Runs the real conversion of the installed weights and compares both backends
on the chips of every sample photo.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime
import pytest

import facetrust
from facetrust import Embedding, FacePipeline, Settings, compare
from facetrust.errors import InvalidParameter, ModelError
from facetrust.models import onnx_backend, onnx_export, selection
from facetrust.models.dlib_backend import DlibResnetEmbedder, model_path
from facetrust.models.dlib_format import Conv, read_network
from facetrust.models.onnx_backend import OnnxResnetEmbedder, convert_dlib_resnet

pytestmark = pytest.mark.slow  # converts dlib's network, embeds every sample chip twice

#: Far below any decision: LFW distances of a pair near the 0.6 threshold differ
#: by thousandths between photos; backend differences are about 1e-6.
TOLERANCE = 1e-4

Chips = npt.NDArray[np.uint8]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def converted(onnx_cache: Path) -> Path:
    return convert_dlib_resnet(cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def sample_chips(
    pipeline: FacePipeline, photos: dict[str, list[Path]], multi_face_photo: Path
) -> tuple[list[Path], Chips]:
    """The chip of the largest face of each sample photo plus both faces of the group photo."""
    sources, chips = [], []
    for path in [p for paths in photos.values() for p in paths] + [multi_face_photo]:
        for face in pipeline.detect(path):
            assert face.chip is not None
            sources.append(path)
            chips.append(face.chip)
    return sources, np.stack(chips)


@pytest.fixture(scope="session")
def dlib_descriptors(sample_chips: tuple[list[Path], Chips]) -> npt.NDArray[np.float32]:
    return DlibResnetEmbedder().embed(list(sample_chips[1]))


@pytest.fixture(scope="session")
def onnx_embedder(onnx_cache: Path) -> OnnxResnetEmbedder:
    return OnnxResnetEmbedder(cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def onnx_descriptors(
    onnx_embedder: OnnxResnetEmbedder, sample_chips: tuple[list[Path], Chips]
) -> npt.NDArray[np.float32]:
    return onnx_embedder.embed(list(sample_chips[1]))


def test_converted_graph_loads_in_onnx_runtime_with_a_free_batch_dimension(
    converted: Path,
) -> None:
    session = onnxruntime.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    (chips,), (descriptors,) = session.get_inputs(), session.get_outputs()
    assert (chips.name, chips.type, chips.shape) == ("chips", "tensor(uint8)", ["n", 150, 150, 3])
    assert (descriptors.name, descriptors.shape) == ("descriptors", ["n", 128])
    assert onnx_backend.weights_sha256(model_path("resnet")) in converted.name


def test_reader_finds_the_resnet_layers_of_dlibs_face_model() -> None:
    network = read_network(model_path("resnet"))
    convs = [layer for layer in network.layers if isinstance(layer, Conv)]
    assert network.input.size == (150, 150) and network.loss == "loss_metric_2"
    assert network.input.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    # 1 stem convolution + 2 per residual block (3 + 4 + 3 + 3 + 1 blocks).
    assert len(convs) == 29
    assert convs[0].weights.shape == (32, 3, 7, 7) and convs[-1].weights.shape[0] == 256


def test_onnx_descriptors_equal_dlibs_on_every_sample_chip(
    sample_chips: tuple[list[Path], Chips],
    dlib_descriptors: npt.NDArray[np.float32],
    onnx_descriptors: npt.NDArray[np.float32],
) -> None:
    assert len(sample_chips[1]) == 42
    assert onnx_descriptors.shape == dlib_descriptors.shape == (42, 128)
    assert onnx_descriptors.dtype == np.float32
    difference = np.abs(onnx_descriptors - dlib_descriptors)
    assert difference.max() < TOLERANCE, difference.max()
    # Like dlib's, the network's output is not normalised to unit length.
    norms = np.linalg.norm(onnx_descriptors, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)


def test_batch_size_does_not_change_descriptors(
    onnx_embedder: OnnxResnetEmbedder,
    sample_chips: tuple[list[Path], Chips],
    onnx_descriptors: npt.NDArray[np.float32],
) -> None:
    one_by_one = np.concatenate([onnx_embedder.embed([chip]) for chip in sample_chips[1][:5]])
    np.testing.assert_allclose(one_by_one, onnx_descriptors[:5], atol=1e-5)


def test_templates_are_interchangeable_between_backends(
    sample_chips: tuple[list[Path], Chips],
    dlib_descriptors: npt.NDArray[np.float32],
    onnx_descriptors: npt.NDArray[np.float32],
) -> None:
    model_id = DlibResnetEmbedder.model_id
    assert OnnxResnetEmbedder.model_id == model_id == "dlib-resnet-v1"
    assert (OnnxResnetEmbedder.backend, DlibResnetEmbedder.backend) == ("onnxruntime", "dlib")
    dlib_templates = [Embedding(v, model_id) for v in dlib_descriptors]
    onnx_templates = [Embedding(v, model_id) for v in onnx_descriptors]
    pairs = list(itertools.combinations(range(len(dlib_templates)), 2))
    same_backend = [compare(dlib_templates[i], dlib_templates[j]) for i, j in pairs]
    mixed = [compare(onnx_templates[i], dlib_templates[j]) for i, j in pairs]
    assert [v.match for v in mixed] == [v.match for v in same_backend]
    gaps = [abs(a.distance - b.distance) for a, b in zip(mixed, same_backend, strict=True)]
    assert max(gaps) < TOLERANCE
    assert any(v.match for v in mixed) and not all(v.match for v in mixed)


def test_truncated_weights_give_an_error_naming_the_file(tmp_path: Path) -> None:
    weights = tmp_path / "truncated.dat"
    weights.write_bytes(model_path("resnet").read_bytes()[:5_000_000])
    with pytest.raises(ModelError, match=r"truncated\.dat.*the file ends"):
        read_network(weights)
    with pytest.raises(ModelError, match=r"truncated\.dat"):
        convert_dlib_resnet(weights, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    ("offset", "garbage"),
    [(4, b"xoss"), (0x151, b"\x7f"), (0x155, b"\x01\x09")],
    ids=["loss-name", "first-layer-name", "tensor-version"],
)
def test_corrupt_weights_give_an_error_naming_the_file(
    tmp_path: Path, offset: int, garbage: bytes
) -> None:
    data = bytearray(model_path("resnet").read_bytes())
    data[offset : offset + len(garbage)] = garbage
    weights = tmp_path / "corrupt.dat"
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"corrupt\.dat.*at byte \d+"):
        read_network(weights)


def test_missing_weights_give_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="absent.dat"):
        OnnxResnetEmbedder(tmp_path / "absent.dat", cache_dir=tmp_path).embed(
            [np.zeros((150, 150, 3), np.uint8)]
        )


def test_conversion_is_cached_and_reused(
    converted: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = converted.stat().st_mtime_ns

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(onnx_export, "build_onnx_model", no_rebuild)
    assert convert_dlib_resnet(cache_dir=onnx_cache) == converted
    assert converted.stat().st_mtime_ns == written
    assert [p.name for p in onnx_cache.iterdir()] == [converted.name]  # no temporary left


def test_conversion_is_rebuilt_when_the_weights_change(
    tmp_path: Path,
    converted: Path,
    sample_chips: tuple[list[Path], Chips],
    onnx_descriptors: npt.NDArray[np.float32],
) -> None:
    cache = tmp_path / "cache"
    weights = tmp_path / "weights.dat"
    shutil.copyfile(model_path("resnet"), weights)
    first = convert_dlib_resnet(weights, cache)
    assert first.name == converted.name
    data = bytearray(weights.read_bytes())
    header = data.index(b"con_4") + len(b"con_4")
    assert data[header : header + 2] == b"\x01\x02"  # the stem's parameter tensor follows
    first_weight = header + 11  # tensor version and four dimensions
    value = np.frombuffer(bytes(data[first_weight : first_weight + 4]), "<f4")[0]
    data[first_weight : first_weight + 4] = np.float32(value + 1.0).astype("<f4").tobytes()
    weights.write_bytes(bytes(data))
    second = convert_dlib_resnet(weights, cache)
    assert second != first and first.is_file() and second.is_file()
    changed = OnnxResnetEmbedder(weights, cache_dir=cache).embed(list(sample_chips[1][:2]))
    assert np.abs(changed - onnx_descriptors[:2]).max() > 1e-3


def test_chips_of_the_wrong_shape_are_refused(onnx_embedder: OnnxResnetEmbedder) -> None:
    with pytest.raises(InvalidParameter, match=r"uint8 arrays of shape \(150, 150, 3\)"):
        onnx_embedder.embed([np.zeros((160, 160, 3), np.uint8)])
    assert onnx_embedder.embed([]).shape == (0, 128)


def test_default_embedder_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(selection.default_embedder(Settings(embedder="dlib")), DlibResnetEmbedder)
    onnx = selection.default_embedder(Settings(embedder="onnx", embedder_threads=1))
    assert isinstance(onnx, OnnxResnetEmbedder) and onnx.threads == 1
    assert isinstance(selection.default_embedder(), OnnxResnetEmbedder)  # installed here
    env = Settings.from_env({"FACETRUST_EMBEDDER": "dlib"})
    assert FacePipeline(env).embedder.backend == "dlib"
    with pytest.raises(InvalidParameter, match="'embedder' setting"):
        Settings(embedder="tensorflow")
    # Without onnxruntime installed (not causable here without uninstalling it):
    monkeypatch.setattr(onnx_backend, "onnxruntime_available", lambda: False)
    assert isinstance(selection.default_embedder(), DlibResnetEmbedder)
    with pytest.raises(ModelError, match="pip install onnxruntime onnx"):
        selection.default_embedder(Settings(embedder="onnx"))


def test_default_pipeline_embeds_with_onnx_runtime_and_matches_dlib(
    pipeline: FacePipeline,
    sample_embeddings: dict[Path, facetrust.Embedding],
    sample_chips: tuple[list[Path], Chips],
    dlib_descriptors: npt.NDArray[np.float32],
) -> None:
    assert pipeline.embedder.backend == "onnxruntime"
    assert pipeline.model_id == "dlib-resnet-v1"
    first = sample_chips[0][0]
    assert np.abs(sample_embeddings[first].vector - dlib_descriptors[0]).max() < TOLERANCE
