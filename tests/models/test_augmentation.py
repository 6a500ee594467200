"""Test-time augmentation: fixed views of each chip, averaged, under their own model id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrust import FacePipeline, Settings
from facetrust.errors import InvalidParameter
from facetrust.evaluation.cache import EmbeddingCache
from facetrust.models.augmentation import (
    AUGMENTATIONS,
    AugmentedEmbedder,
    augmented_model_id,
    augmented_views,
    views_per_chip,
)
from facetrust.models.onnx_backend import OnnxResnetEmbedder
from facetrust.models.selection import default_embedder, embedder_model_id


@pytest.fixture(scope="module")
def chips(photos: dict[str, list[Path]]) -> list[np.ndarray]:
    pipeline = FacePipeline(Settings(embedder_threads=1))
    found = [pipeline.detect(paths[0])[0].chip for paths in list(photos.values())[:3]]
    return [chip for chip in found if chip is not None]


@pytest.fixture(scope="module")
def base() -> OnnxResnetEmbedder:
    return OnnxResnetEmbedder(threads=1)


def test_each_augmentation_has_its_own_model_id() -> None:
    ids = {augmented_model_id("dlib-resnet-v1", a) for a in AUGMENTATIONS}
    assert ids == {"dlib-resnet-v1", "dlib-resnet-v1+mirror", "dlib-resnet-v1+jitter"}
    assert [views_per_chip(a) for a in AUGMENTATIONS] == [1, 2, 6]
    with pytest.raises(InvalidParameter, match="'augmentation' setting must be one of"):
        augmented_model_id("dlib-resnet-v1", "flip")
    with pytest.raises(InvalidParameter, match="'augmentation' setting"):
        Settings(augmentation="flip")


def test_views_start_with_the_chip_and_its_mirror(chips: list[np.ndarray]) -> None:
    chip = chips[0]
    views = augmented_views(chip, "jitter")
    assert len(views) == 6
    assert views[0] is chip
    assert np.array_equal(views[1], chip[:, ::-1])
    assert all(v.shape == chip.shape and v.dtype == np.uint8 for v in views)
    assert np.array_equal(views[3], views[2][:, ::-1])
    assert [v.tobytes() for v in augmented_views(chip, "mirror")] == [
        v.tobytes() for v in views[:2]
    ]


def test_mirror_descriptor_is_the_mean_of_chip_and_mirror(
    chips: list[np.ndarray], base: OnnxResnetEmbedder
) -> None:
    mirror = AugmentedEmbedder(base, "mirror")
    assert mirror.model_id == "dlib-resnet-v1+mirror"
    assert (mirror.chip_size, mirror.dimension) == (150, 128)
    ours = mirror.embed(chips)
    plain = base.embed(chips)
    flipped = base.embed([np.ascontiguousarray(c[:, ::-1]) for c in chips])
    assert ours.shape == (len(chips), 128) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, (plain + flipped) / 2, atol=1e-5)
    np.testing.assert_array_equal(mirror.embed(chips), ours)  # fixed views: deterministic
    assert mirror.embed([]).shape == (0, 128)


def test_augmented_descriptors_keep_people_apart(
    photos: dict[str, list[Path]], base: OnnxResnetEmbedder
) -> None:
    pipeline = FacePipeline(
        Settings(embedder_threads=1), embedder=AugmentedEmbedder(base, "jitter")
    )
    people = [paths for paths in photos.values() if len(paths) >= 2][:2]
    vectors = [[pipeline.embed_one(p).embedding.vector for p in paths[:2]] for paths in people]
    same = [float(np.linalg.norm(a - b)) for a, b in vectors]
    other = float(np.linalg.norm(vectors[0][0] - vectors[1][0]))
    assert max(same) < other


def test_settings_choose_the_augmentation_and_caches_key_on_its_id() -> None:
    settings = Settings(augmentation="mirror", embedder_threads=1)
    embedder = default_embedder(settings)
    assert isinstance(embedder, AugmentedEmbedder)
    assert embedder.model_id == embedder_model_id(settings) == "dlib-resnet-v1+mirror"
    assert FacePipeline(settings).model_id == "dlib-resnet-v1+mirror"
    assert embedder_model_id(Settings()) == "dlib-resnet-v1"
    assert Settings.from_env({"FACETRUST_AUGMENTATION": "jitter"}).augmentation == "jitter"
    with EmbeddingCache(":memory:", settings) as cache:
        assert cache.model_id == "dlib-resnet-v1+mirror"
