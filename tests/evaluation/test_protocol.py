"""The 10-fold protocol and the embedding cache on the real sample photos."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facetrust.batch import ImageResult, embed_many
from facetrust.config import Settings
from facetrust.errors import EvaluationError
from facetrust.evaluation.cache import CachedImage, EmbeddingCache
from facetrust.evaluation.pairs import read_pairs
from facetrust.evaluation.protocol import best_threshold, evaluate_pairs
from facetrust.evaluation.run import list_images, run_pairs

from .conftest import PAIRS, SAMPLE


def test_sample_pairs_accuracy_is_within_expected_bounds(
    sample_images: dict[str, CachedImage],
) -> None:
    result = evaluate_pairs(read_pairs(PAIRS, SAMPLE), sample_images)
    # dlib's model is 99.38% on LFW; 60 easy sample pairs should be nearly all right,
    # and a broken pipeline (random distances) would be near 50%.
    assert result.mean_accuracy >= 0.95
    assert result.fta_pairs == 0
    assert len(result.fold_accuracies) == 10
    assert result.eer <= 0.05
    # dlib's documented 0.6 lies inside the range of thresholds a fold can choose.
    assert all(0.4 < t < 0.8 for t in result.fold_thresholds)
    mated = result.distances[result.labels]
    non_mated = result.distances[~result.labels]
    assert mated.mean() < 0.6 < non_mated.mean()


def test_failure_to_acquire_pairs_count_as_errors(
    sample_copy: Path, cache_file: Path, tmp_path: Path
) -> None:
    broken = sample_copy / "Broken_Person" / "Broken_Person_0001.jpg"
    broken.parent.mkdir()
    broken.write_bytes((sample_copy / "Kofi_Annan" / "Kofi_Annan_0001.jpg").read_bytes()[:300])
    pairs_file = tmp_path / "pairs.csv"
    rows = ["image_a,image_b,same,fold"]
    for fold in range(2):
        rows += [
            f"Kofi_Annan/Kofi_Annan_000{1 + fold}.jpg,Kofi_Annan/Kofi_Annan_0003.jpg,1,{fold}",
            f"Hu_Jintao/Hu_Jintao_000{1 + fold}.jpg,Hu_Jintao/Hu_Jintao_0004.jpg,1,{fold}",
            f"Kofi_Annan/Kofi_Annan_0001.jpg,Hu_Jintao/Hu_Jintao_000{1 + fold}.jpg,0,{fold}",
            f"Colin_Powell/Colin_Powell_0001.jpg,Hu_Jintao/Hu_Jintao_000{2 + fold}.jpg,0,{fold}",
        ]
    rows.append("Broken_Person/Broken_Person_0001.jpg,Kofi_Annan/Kofi_Annan_0002.jpg,0,0")
    pairs_file.write_text("\n".join(rows) + "\n")
    run = run_pairs(sample_copy, pairs_file, cache=cache_file, workers=1)
    result = run.pairs
    assert result is not None
    assert result.fta_pairs == 1 and result.fta_non_mated == 1
    assert result.faces.no_face == 1
    # Fold 0 has 5 pairs and the FTA pair is wrong whatever the threshold.
    assert result.fold_accuracies[0] == pytest.approx(4 / 5)
    assert result.fold_accuracies[1] == 1.0
    assert result.labels.size == result.n_pairs - 1  # excluded from the curves, not hidden


def _counting(calls: list[str]) -> Any:
    def compute(paths: list[str], settings: Any, **kwargs: Any) -> Iterable[ImageResult]:
        calls.extend(paths)
        return embed_many(paths, settings, **kwargs)

    return compute


def test_cache_is_hit_on_a_rerun(tmp_path: Path) -> None:
    paths = list_images(SAMPLE)[:4]
    calls: list[str] = []
    path = tmp_path / "cache.sqlite"
    with EmbeddingCache(path, compute=_counting(calls)) as cache:
        first = cache.get_or_compute(paths, workers=1)
        assert len(calls) == 4 and cache.computed_ == 4
    with EmbeddingCache(path, compute=_counting(calls)) as cache:
        second = cache.get_or_compute(paths, workers=1)
        assert len(calls) == 4, "no model call on the re-run"
        assert cache.hits_ == 4 and cache.computed_ == 0
    for p in paths:
        np.testing.assert_array_equal(first[p].faces[0].vector, second[p].faces[0].vector)
        assert first[p].faces[0].box == second[p].faces[0].box


def test_cache_keys_on_file_content_not_name(tmp_path: Path) -> None:
    source = list_images(SAMPLE)[0]
    renamed = tmp_path / "renamed.jpg"
    renamed.write_bytes(Path(source).read_bytes())
    calls: list[str] = []
    with EmbeddingCache(tmp_path / "c.sqlite", compute=_counting(calls)) as cache:
        cache.get_or_compute([source], workers=1)
        result = cache.get_or_compute([renamed], workers=1)
    assert len(calls) == 1
    assert result[str(renamed)].acquired


def test_centre_face_is_chosen_when_several(tmp_path: Path) -> None:
    photo = Path(__file__).resolve().parents[1] / "data" / "multi_face" / "Vicente_Fox_0002.jpg"
    with EmbeddingCache(tmp_path / "c.sqlite", face_policy=None) as cache:  # every face
        image = cache.get_or_compute([photo], workers=1)[str(photo)]
    assert len(image.faces) >= 2
    chosen = image.subject_face()
    assert chosen is not None

    def offset(face: Any) -> float:
        x = (face.box.left + face.box.right) / 2 - image.width / 2
        y = (face.box.top + face.box.bottom) / 2 - image.height / 2
        return float(np.hypot(x, y))

    assert offset(chosen) == min(offset(f) for f in image.faces)


def test_best_threshold_maximises_accuracy() -> None:
    labels = np.array([True, True, True, False, False, False])
    distances = np.array([0.2, 0.3, 0.7, 0.5, 0.8, 0.9])
    threshold = best_threshold(labels, distances)
    # 0.3 < t < 0.5 gets 5/6 right; so does 0.7 < t < 0.8; the strictest wins.
    assert 0.3 < threshold < 0.5


def test_pairs_without_embeddings_are_refused(sample_images: dict[str, CachedImage]) -> None:
    pairs = read_pairs(PAIRS, SAMPLE)
    partial = dict(list(sample_images.items())[:5])
    with pytest.raises(EvaluationError, match="No embedding result"):
        evaluate_pairs(pairs, partial)


def test_the_evaluation_reads_images_with_the_product_pipeline(
    sample_copy: Path, cache_file: Path, tmp_path: Path
) -> None:
    """Recovery finds the face HOG misses; a photo of two faces is read as verify reads it."""
    import shutil

    hard = Path(__file__).resolve().parents[1] / "data" / "hard_faces" / "Angela_Merkel"
    shutil.copytree(hard, sample_copy / "Angela_Merkel")
    multi = Path(__file__).resolve().parents[1] / "data" / "multi_face" / "Vicente_Fox_0002.jpg"
    shutil.copy(multi, sample_copy / "Vicente_Fox" / "Vicente_Fox_0002.jpg")
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text(
        "Angela_Merkel/Angela_Merkel_0001.jpg,Angela_Merkel/Angela_Merkel_0003.jpg,1,0\n"
        "Kofi_Annan/Kofi_Annan_0001.jpg,Hu_Jintao/Hu_Jintao_0001.jpg,0,0\n"
        "Kofi_Annan/Kofi_Annan_0001.jpg,Kofi_Annan/Kofi_Annan_0002.jpg,1,1\n"
        "Angela_Merkel/Angela_Merkel_0001.jpg,Vicente_Fox/Vicente_Fox_0002.jpg,0,1\n"
    )
    run = run_pairs(sample_copy, pairs_file, cache=cache_file, workers=1)
    assert run.pairs is not None and run.pairs.fta_pairs == 0
    assert run.cache["refused_no_face"] == 0 and run.cache["refused_several_faces"] == 0
    mated = run.pairs.distances[run.pairs.labels]
    assert mated.max() < 0.6  # the recovered box gives a usable embedding of the same person
    summary = run.pairs.summary()["failure_to_acquire"]
    assert summary["pairs"] == 0 and summary["several_faces_images"] == 0



def test_a_face_below_the_quality_minimums_is_a_cached_refusal() -> None:
    photo = sorted(SAMPLE.glob("*/*.jpg"))[0]
    strict = Settings.from_env(min_inter_eye_px=500)  # no face of a 250 px photo passes
    with EmbeddingCache(":memory:", strict) as cache:
        image = cache.get_or_compute([photo], workers=1)[str(photo)]
    assert image.error_type == "FaceQualityTooLow" and "too small" in str(image.error)
    assert not image.acquired and image.subject_face() is None
    assert len(image.faces) == 1  # kept, for studies of the quality limits


def test_cache_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    from facetrust.errors import StoreError

    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="Delete the file"):
        EmbeddingCache(bad)


def test_missing_image_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        list_images(tmp_path / "nowhere")
