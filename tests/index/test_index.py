"""Vector indexes: one conformance suite for every VectorIndex implementation.

Real templates come from the shipped photo sample (embedded once per session);
larger clustered sets come from a TemplateModel fitted to that sample.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import facetrust
from facetrust.errors import IndexFileError, InvalidParameter, StaleIndex
from facetrust.index import (
    AutoIndex,
    ExactIndex,
    HnswIndex,
    QuantizedIndex,
    VectorIndex,
    choose_index,
    ids_checksum,
    load_index,
)
from facetrust.index.synthetic import TemplateModel, distance_report, ks_statistic

DIM = 128
MODEL = "test-model"

Factory = Callable[[], VectorIndex]

FACTORIES: dict[str, Factory] = {
    "exact": lambda: ExactIndex(DIM, MODEL),
    # Forced through the graph even for small allowed sets (over-fetch path).
    "hnsw-graph-filter": lambda: HnswIndex(
        DIM, MODEL, exact_below_allowed=0, exact_below_fraction=0.0
    ),
    "hnsw": lambda: HnswIndex(DIM, MODEL),
    # Trained from 16 templates on, so even the 40-photo sample goes through the codes.
    "quantized": lambda: QuantizedIndex(DIM, MODEL, min_train=16),
    "quantized-scan-filter": lambda: QuantizedIndex(
        DIM, MODEL, min_train=16, exact_below_allowed=0, exact_below_fraction=0.0
    ),
    "auto": lambda: AutoIndex(DIM, MODEL, threshold=100, min_train=100),
    "auto-hnsw": lambda: AutoIndex(DIM, MODEL, threshold=100, approximate="hnsw"),
}
APPROXIMATE = set(FACTORIES) - {"exact"}


@pytest.fixture(params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def real(
    sample_embeddings: dict[Path, facetrust.Embedding],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The sample's templates (40, 128) and their identity numbers."""
    paths = sorted(sample_embeddings)
    names = sorted({p.parent.name for p in paths})
    vectors = np.stack([sample_embeddings[p].vector for p in paths]).astype(np.float32)
    labels = np.asarray([names.index(p.parent.name) for p in paths], dtype=np.int64)
    return vectors, labels


@pytest.fixture(scope="session")
def clustered(
    real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """A 3,000-template gallery from a model fitted to the real sample, and 50 mated probes."""
    model = TemplateModel.fit(*real)
    rng = np.random.default_rng(1)
    centres = model.sample_centres(3000, rng)
    return model.sample_templates(centres, rng), model.sample_templates(centres[:50], rng)


def brute_force(
    gallery: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    k: int,
    allowed: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Reference k-NN with facetrust.face_distance, one query at a time."""
    keep = np.ones(len(ids), bool) if allowed is None else np.isin(ids, allowed)
    out_d, out_i = [], []
    for query in queries:
        distances = facetrust.face_distance(gallery[keep], query)
        order = np.argsort(distances, kind="stable")[:k]
        out_d.append(distances[order])
        out_i.append(ids[keep][order])
    return np.asarray(out_d), np.asarray(out_i)


def filled(kind: str, vectors: npt.NDArray[np.float32], first_id: int = 1000) -> VectorIndex:
    index = FACTORIES[kind]()
    ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
    half = len(vectors) // 2  # two adds, so growth and graph updates are exercised
    index.add(ids[:half], vectors[:half])
    index.add(ids[half:], vectors[half:])
    return index


def test_every_implementation_follows_the_protocol(kind: str) -> None:
    index = FACTORIES[kind]()
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM and index.model_id == MODEL and len(index) == 0


def test_search_on_real_templates_equals_brute_force(
    kind: str, real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    vectors, _ = real
    index = filled(kind, vectors)
    ids = np.arange(1000, 1000 + len(vectors))
    distances, found = index.search(vectors, k=5)
    want_d, want_i = brute_force(vectors, ids, vectors, 5)
    assert found.shape == (len(vectors), 5) and found.dtype == np.int64
    assert distances.dtype == np.float32
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)
    assert found[:, 0].tolist() == ids.tolist()  # each template is its own nearest


def test_search_on_clustered_templates_finds_the_true_neighbours(
    kind: str, clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
) -> None:
    gallery, probes = clustered
    index = filled(kind, gallery)
    ids = np.arange(1000, 1000 + len(gallery))
    distances, found = index.search(probes, k=10)
    want_d, want_i = brute_force(gallery, ids, probes, 10)
    if kind in APPROXIMATE:
        recall = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want_i, strict=True)])
        assert recall >= 0.95
        assert np.mean(found[:, 0] == want_i[:, 0]) >= 0.95
    else:
        np.testing.assert_array_equal(found, want_i)
    assert np.all(np.diff(distances, axis=1) >= 0)
    # Whatever an index returns, its distance is the true Euclidean one.
    true = np.linalg.norm(gallery[found - 1000] - probes[:, None, :], axis=2)
    np.testing.assert_allclose(distances, true, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_filtering_returns_only_allowed_ids_and_finds_them(
    kind: str,
    fraction: float,
    clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
) -> None:
    gallery, probes = clustered
    index = filled(kind, gallery)
    ids = np.arange(1000, 1000 + len(gallery))
    rng = np.random.default_rng(7)
    allowed = rng.choice(ids, int(fraction * len(ids)), replace=False)
    # Half the probes are mated with an allowed identity, half with a disallowed one.
    _, found = index.search(probes, k=10, allowed=set(allowed.tolist()))
    assert np.all(np.isin(found[found >= 0], allowed))
    assert np.all(found >= 0)  # at least 10 allowed ids exist, so no padding
    _, want = brute_force(gallery, ids, probes, 10, allowed)
    if kind in APPROXIMATE:
        recall = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want, strict=True)])
        assert recall >= 0.95
    else:
        np.testing.assert_array_equal(found, want)


def test_filtering_pads_when_fewer_ids_are_allowed_than_asked(
    kind: str, real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    vectors, _ = real
    index = filled(kind, vectors)
    distances, found = index.search(vectors[:3], k=4, allowed=np.array([1003, 1010, 99999]))
    assert sorted(found[0, :2].tolist()) == [1003, 1010]
    assert found[:, 2:].tolist() == [[-1, -1]] * 3
    assert np.isinf(distances[:, 2:]).all()
    _, nothing = index.search(vectors[:2], k=3, allowed=[])
    assert (nothing == -1).all()


def test_remove_takes_effect_at_once(
    kind: str, clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
) -> None:
    gallery, probes = clustered
    index = filled(kind, gallery)
    _, before = index.search(probes, k=3)
    doomed = before[:, 0]
    assert index.remove(np.append(doomed, 123)) == len(set(doomed.tolist()))
    assert len(index) == len(gallery) - len(set(doomed.tolist()))
    assert all(int(i) not in index for i in doomed)
    _, after = index.search(probes, k=3)
    assert not np.isin(after, doomed).any()
    _, filtered = index.search(probes, k=3, allowed=doomed)
    assert (filtered == -1).all()
    # A removed id can be enrolled again (a re-enrolment after erasure).
    index.add(doomed[:1], gallery[doomed[:1] - 1000])
    _, again = index.search(gallery[doomed[0] - 1000], k=1)
    assert again[0, 0] == doomed[0]


def test_invalid_input_is_refused_with_a_clear_error(kind: str) -> None:
    index = FACTORIES[kind]()
    vectors = np.zeros((2, DIM), np.float32)
    index.add([1, 2], vectors)
    with pytest.raises(InvalidParameter, match="already in the index"):
        index.add([2], vectors[:1])
    with pytest.raises(InvalidParameter, match="non-negative"):
        index.add([-5], vectors[:1])
    with pytest.raises(InvalidParameter, match=r"shape \(1, 128\)"):
        index.add([3], np.zeros((1, 64), np.float32))
    with pytest.raises(InvalidParameter, match="finite"):
        index.add([3], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(InvalidParameter, match="'k'"):
        index.search(vectors[0], k=0)
    with pytest.raises(InvalidParameter, match=r"\(n, 128\)"):
        index.search(np.zeros(5, np.float32), k=1)
    assert len(index) == 2


def test_save_and_load_round_trip(
    kind: str, tmp_path: Path, clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
) -> None:
    gallery, probes = clustered
    index = filled(kind, gallery[:500])
    index.remove([1000, 1001])
    path = tmp_path / "gallery.index"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.index"]  # no temporary left
    loaded = load_index(path, model_id=MODEL, dim=DIM, ids=index.ids())
    assert len(loaded) == 498 and 1000 not in loaded
    np.testing.assert_array_equal(np.sort(loaded.ids()), np.sort(index.ids()))
    for allowed in (None, np.arange(1100, 1400)):
        want = index.search(probes, k=5, allowed=allowed)
        got = loaded.search(probes, k=5, allowed=allowed)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0])


def test_stale_index_is_detected(
    kind: str, tmp_path: Path, real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    index = filled(kind, real[0])
    path = tmp_path / "gallery.index"
    index.save(path)
    with pytest.raises(StaleIndex, match="model 'test-model' instead of 'other'"):
        load_index(path, model_id="other")
    with pytest.raises(StaleIndex, match="40 templates instead of 39"):
        load_index(path, ids=index.ids()[:-1])
    changed = index.ids()
    changed[0] = 5
    with pytest.raises(StaleIndex, match="different set of template ids"):
        load_index(path, ids=changed)
    with pytest.raises(StaleIndex, match="dimension 128 instead of 64"):
        load_index(path, dim=64)


def test_corrupt_or_foreign_files_are_detected(
    kind: str, tmp_path: Path, real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    path = tmp_path / "gallery.index"
    filled(kind, real[0]).save(path)
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.index"
    data[-100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="corrupt"):
        load_index(flipped)
    truncated = tmp_path / "truncated.index"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IndexFileError, match="corrupt"):
        load_index(truncated)
    foreign = tmp_path / "foreign.index"
    foreign.write_bytes(b"\x93NUMPY not an index")
    with pytest.raises(IndexFileError, match="not a facetrust index"):
        load_index(foreign)
    with pytest.raises(IndexFileError, match="Cannot read"):
        load_index(tmp_path / "missing.index")


def test_auto_index_switches_to_the_graph_at_its_threshold(
    clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
) -> None:
    gallery, _ = clustered
    index = AutoIndex(DIM, MODEL, threshold=300)
    index.add(np.arange(299), gallery[:299])
    assert not index.is_approximate
    index.add([299], gallery[299:300])
    assert index.is_approximate and len(index) == 300
    _, found = index.search(gallery[:20], k=1)
    assert found[:, 0].tolist() == list(range(20))


def test_choose_index_picks_exact_below_the_threshold() -> None:
    assert isinstance(choose_index(999, DIM, MODEL, threshold=1000), ExactIndex)
    assert isinstance(choose_index(1000, DIM, MODEL, threshold=1000), QuantizedIndex)
    graph = choose_index(1000, DIM, MODEL, threshold=1000, approximate="hnsw")
    assert isinstance(graph, HnswIndex)
    with pytest.raises(InvalidParameter, match="approximate index kind"):
        choose_index(1000, DIM, MODEL, threshold=1000, approximate="annoy")


def test_quantized_index_trains_late_retrains_as_it_grows_and_stays_aligned(
    clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]], tmp_path: Path
) -> None:
    gallery, probes = clustered
    index = QuantizedIndex(DIM, MODEL, min_train=100)
    trained_on = []
    for start, end in ((0, 99), (99, 100), (100, 399), (399, 400), (400, 3000)):
        index.add(np.arange(start, end), gallery[start:end])
        trained_on.append(index.trained_on)
    # Exact until 100 templates; codebooks re-learnt each time the size quadruples.
    assert trained_on == [0, 100, 100, 400, 3000]
    assert index.is_rotated  # 3,000 training templates: an OPQ rotation was learnt
    # Removing rows in the middle must keep codes and rows aligned: every
    # returned distance is the true one of the returned id.
    rng = np.random.default_rng(5)
    doomed = rng.choice(3000, 700, replace=False)
    assert index.remove(doomed) == 700
    distances, found = index.search(probes, k=10)
    assert not np.isin(found, doomed).any()
    true = np.linalg.norm(gallery[found] - probes[:, None, :], axis=2)
    np.testing.assert_allclose(distances, true, atol=1e-5)
    kept = np.setdiff1d(np.arange(3000), doomed)
    _, want = brute_force(gallery[kept], kept, probes, 10)
    assert np.mean(found[:, 0] == want[:, 0]) >= 0.95
    # The rotation and codes survive a save and load: same answers.
    path = tmp_path / "rotated.index"
    index.save(path)
    loaded = load_index(path, model_id=MODEL, ids=kept)
    assert isinstance(loaded, QuantizedIndex) and loaded.is_rotated
    np.testing.assert_array_equal(loaded.search(probes, k=10)[1], found)


def test_id_checksum_depends_only_on_the_id_set() -> None:
    assert ids_checksum([3, 1, 2]) == ids_checksum(np.array([1, 2, 3]))
    assert ids_checksum([1, 2, 3]) != ids_checksum([1, 2, 4])


def test_template_model_recovers_known_covariances() -> None:
    rng = np.random.default_rng(3)
    between = np.diag(np.linspace(0.5, 0.1, 8)) ** 2
    within = np.diag(np.linspace(0.2, 0.05, 8)) ** 2
    centres = rng.multivariate_normal(np.ones(8), between, 400)
    labels = np.repeat(np.arange(400), 5)
    vectors = np.repeat(centres, 5, axis=0) + rng.multivariate_normal(np.zeros(8), within, 2000)
    model = TemplateModel.fit(vectors, labels)
    np.testing.assert_allclose(model.within_, within, atol=0.004)
    np.testing.assert_allclose(model.between_, between, atol=0.03)
    np.testing.assert_allclose(model.mean_, np.ones(8), atol=0.06)


def test_template_model_reproduces_the_real_sample_distances(
    real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
) -> None:
    threshold = facetrust.get_operating_point().threshold
    report = distance_report(TemplateModel.fit(*real), *real, threshold=threshold, pairs=2000)
    for side in ("mated", "non_mated"):
        real_mean = report[side]["real"]["mean"]
        assert abs(report[side]["synthetic"]["mean"] - real_mean) < 0.1 * real_mean
    assert report["mated"]["real"]["mean"] < report["non_mated"]["real"]["mean"]


def test_ks_statistic_equals_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1.2, 200)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_template_model_refuses_too_little_data() -> None:
    with pytest.raises(InvalidParameter, match="two identities with two or more"):
        TemplateModel.fit(np.zeros((3, 4)), [0, 1, 2])


def test_index_files_are_not_left_half_written(tmp_path: Path) -> None:
    index = ExactIndex(DIM, MODEL)
    index.add([1], np.ones((1, DIM), np.float32))
    path = tmp_path / "gallery.index"
    index.save(path)
    first = path.read_bytes()
    index.add([2], np.ones((1, DIM), np.float32))
    index.save(path)
    assert path.read_bytes() != first
    assert os.listdir(tmp_path) == ["gallery.index"]


def test_an_erased_template_is_not_written_to_disk(
    kind: str, tmp_path: Path, real: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    vectors, _ = real
    index = filled(kind, vectors)
    index.remove([1007])
    path = tmp_path / "gallery.index"
    index.save(path)
    data = path.read_bytes()
    assert vectors[7].astype("<f4").tobytes() not in data
    assert vectors[8].astype("<f4").tobytes() in data  # a kept one is, so the check can fail


def test_a_sorted_allowed_array_and_a_set_give_the_same_results(
    kind: str, clustered: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
) -> None:
    gallery, probes = clustered
    index = filled(kind, gallery[:1000])
    allowed = np.arange(1000, 2000, 3, dtype=np.int64)
    as_array = index.search(probes, k=5, allowed=allowed)
    as_set = index.search(probes, k=5, allowed=set(allowed.tolist()))
    np.testing.assert_array_equal(as_array[1], as_set[1])
