"""Shared fixtures of the evaluation tests: the sample photos embedded once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facetrust.evaluation.cache import CachedImage, EmbeddingCache
from facetrust.evaluation.run import list_images

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "lfw"
PAIRS = DATA / "pairs_sample.txt"
LABELS = DATA / "labels_sample"


@pytest.fixture(scope="session")
def cache_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedding cache holding every sample photo (embedded once per session)."""
    path = tmp_path_factory.mktemp("cache") / "embeddings.sqlite"
    with EmbeddingCache(path) as cache:
        cache.get_or_compute(list_images(SAMPLE), workers=1)
    return path


@pytest.fixture(scope="session")
def sample_images(cache_file: Path) -> dict[str, CachedImage]:
    """Path -> cached result for every sample photo."""
    with EmbeddingCache(cache_file) as cache:
        return cache.get_or_compute(list_images(SAMPLE), workers=1)


@pytest.fixture()
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the sample folder."""
    target = tmp_path / "lfw"
    shutil.copytree(SAMPLE, target)
    return target
