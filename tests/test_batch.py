"""Batch embedding in worker processes gives the same results as one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrust import Embedding, embed_many
from facetrust.errors import NotAnImage

pytestmark = pytest.mark.slow  # worker processes


def test_worker_processes_match_in_process_results_in_order(
    photos: dict[str, list[Path]], sample_embeddings: dict[Path, Embedding], tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("hello")
    paths = [p for paths in photos.values() for p in paths[:2]] + [bad]
    results = list(embed_many(paths, workers=2))
    assert [r.source for r in results] == [str(p) for p in paths]
    for path, result in zip(paths[:-1], results[:-1], strict=True):
        assert result.error is None and len(result.faces) == 1
        assert result.faces[0].face.chip is None  # chips stay in the worker
        np.testing.assert_allclose(
            result.faces[0].embedding.vector, sample_embeddings[path].vector, atol=1e-6
        )
    assert isinstance(results[-1].error, NotAnImage) and results[-1].faces == []
