"""Shared fixtures: the real photo sample and one pipeline per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

import facetrust
from facetrust import FacePipeline

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "lfw"


def sample_photos() -> dict[str, list[Path]]:
    """Identity name -> its sample photos (sorted)."""
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(SAMPLE.iterdir()) if d.is_dir()}


@pytest.fixture(scope="session")
def photos() -> dict[str, list[Path]]:
    return sample_photos()


@pytest.fixture(scope="session")
def multi_face_photo() -> Path:
    return DATA / "multi_face" / "Vicente_Fox_0002.jpg"


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return facetrust.default_pipeline()


@pytest.fixture(scope="session")
def sample_embeddings(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> dict[Path, facetrust.Embedding]:
    """The embedding of every sample photo, computed once per session."""
    return {path: pipeline.embed_one(path).embedding for paths in photos.values() for path in paths}
