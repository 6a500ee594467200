"""Batch embedding in worker processes gives the same results as one process."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from custom_embedders import MirroredEmbedder
from facetrust import Embedding, FacePipeline, Settings, embed_many
from facetrust.errors import InvalidParameter, NotAnImage
from facetrust.gallery import Gallery
from facetrust.gallery.batch_enrolment import enroll_batch
from facetrust.models.base import Embedder
from gallery_fixtures import EVIDENCE_SHA256

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


@pytest.fixture(scope="module")
def custom_pipeline() -> FacePipeline:
    pipeline = FacePipeline(Settings(), embedder=MirroredEmbedder())
    assert isinstance(pipeline.embedder, Embedder)
    assert pipeline.model_id != FacePipeline(Settings()).model_id
    return pipeline


def custom_template(path: Path, custom_pipeline: FacePipeline) -> Embedding:
    return custom_pipeline.embed_one(path).embedding


def test_a_custom_pipeline_embeds_in_this_process_with_its_own_model(
    photos: dict[str, list[Path]], custom_pipeline: FacePipeline,
) -> None:
    paths = [p for paths in photos.values() for p in paths[:1]][:3]
    for workers in (1, None):  # None: one per core for the default pipeline; here 1
        results = list(embed_many(paths, pipeline=custom_pipeline, workers=workers))
        for path, result in zip(paths, results, strict=True):
            (face,) = result.faces
            expected = custom_template(path, custom_pipeline)
            assert face.embedding.model_id == expected.model_id == "dlib-resnet-v1+mirror"
            assert np.array_equal(face.embedding.vector, expected.vector)


def test_a_custom_pipeline_is_not_sent_to_worker_processes(
    photos: dict[str, list[Path]], custom_pipeline: FacePipeline,
) -> None:
    paths = [p for paths in photos.values() for p in paths[:1]][:3]
    with pytest.raises(InvalidParameter, match="workers=1") as refused:
        embed_many(paths, pipeline=custom_pipeline, workers=2)
    assert "cannot be sent to worker processes" in str(refused.value)
    # the default pipeline can: each worker builds it anew from its settings
    default = FacePipeline(Settings())
    results = list(embed_many(paths, pipeline=default, workers=2))
    assert all(r.faces[0].embedding.model_id == default.model_id for r in results)


def batch_folder(tmp_path: Path, photos: dict[str, list[Path]]) -> tuple[Path, Path]:
    """Two photos of two people in a folder, and their consent CSV."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = []
    for name in ("Colin_Powell", "Kofi_Annan"):
        for photo in photos[name][:1]:
            shutil.copy(photo, folder / photo.name)
            rows.append(f"{photo.name},{name.lower()},,boarding,2099-01-01,form-{name},"
                        f"{EVIDENCE_SHA256},n1\n")
    consents = tmp_path / "consents.csv"
    consents.write_text("photo,subject_id,display_name,purposes,expires,evidence_ref,"
                        "evidence_sha256,notice_version\n" + "".join(rows))
    return folder, consents


@pytest.mark.parametrize("workers", [1, None])
def test_batch_enrolment_stores_templates_of_the_gallerys_own_pipeline(
    tmp_path: Path, photos: dict[str, list[Path]], custom_pipeline: FacePipeline,
    workers: int | None,
) -> None:
    """A gallery opened with a custom embedder batch-enrols templates of that embedder,
    in this process; asked for worker processes, it refuses and enrols nothing."""
    folder, consents = batch_folder(tmp_path, photos)
    gallery, config_path = Gallery.init_folder(tmp_path / "g")
    gallery.close()
    with Gallery.find(config_path, pipeline=custom_pipeline) as gallery:
        with pytest.raises(InvalidParameter, match="workers=1") as refused:
            enroll_batch(gallery, folder, consents, actor="registrar", workers=2)
        assert "cannot be sent to worker processes" in str(refused.value)
        assert gallery.store.list_subjects() == []
        done = enroll_batch(gallery, folder, consents, actor="registrar", workers=workers)
        assert (done.enrolled, done.failures) == (2, ())
        assert gallery.store.template_model_ids() == ["dlib-resnet-v1+mirror"]
        for name in ("Colin_Powell", "Kofi_Annan"):
            template = custom_template(photos[name][0], custom_pipeline)
            (nearest, *_) = gallery.search(template, purpose="boarding", k=2).hits
            assert nearest.subject_id == name.lower() and nearest.distance <= 1e-6
