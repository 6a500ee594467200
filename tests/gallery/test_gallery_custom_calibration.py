"""A custom embedder calibrated and used in a gallery without editing the package: the
gallery refuses it until its points are measured on real labelled photos with the
gallery's own pipeline and recorded in the gallery (audited); it then enrols, searches
and verifies at the recorded point, which survives reopening and whose edit the audit
check reports. A model the shipped table covers cannot be recorded over."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from custom_embedders import HalvedEmbedder
from facetrust import FacePipeline, Settings, crypto
from facetrust.errors import OperatingPointError
from facetrust.evaluation import calibrate, run_calibration, run_demographics
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.gate import events
from facetrust.gate.decisions import match_at_gate
from facetrust.matching import get_operating_point
from gallery_fixtures import EVIDENCE_SHA256

DATA = Path(__file__).resolve().parents[1] / "data"
LABELS = [DATA / "labels_sample"]
KOFI = "Kofi_Annan"
DATASET = "facetrust tests/data LFW sample (40 photos, 10 identities)"


def consent(gallery: Gallery, subject_id: str) -> None:
    gallery.add_subject(subject_id, actor="registrar")
    gallery.grant_consent(
        subject_id, ["boarding"], expires_at=gallery.now() + timedelta(days=30),
        evidence_ref=f"form-{subject_id}", evidence_sha256=EVIDENCE_SHA256,
        notice_version="v1", actor="registrar",
    )


def sample_distances(
    identities: dict[str, list[Path]], embeddings: dict[Path, Embedding], scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-mated and mated distances of every pair of sample photos (real templates
    scaled by ``scale``)."""
    photos = [p for name in sorted(identities) for p in identities[name]]
    vectors = scale * np.stack([embeddings[p].vector for p in photos]).astype(np.float64)
    who = np.array([p.parent.name for p in photos])
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    upper = np.triu(np.ones_like(distances, dtype=bool), 1)
    same = who[:, None] == who[None]
    return distances[upper & ~same], distances[upper & same]


def test_a_custom_embedder_calibrated_in_the_gallery_enrols_and_searches_at_its_point(
    tmp_path: Path, identities: dict[str, list[Path]], master_key: crypto.MasterKey,
) -> None:
    config = GalleryConfig.in_folder(tmp_path, key_file=None)
    pipeline = FacePipeline(Settings(), embedder=HalvedEmbedder())
    with Gallery.create(config, master_key, pipeline=pipeline) as gallery:
        consent(gallery, KOFI)
        with pytest.raises(OperatingPointError, match="has no calibrated operating points"):
            gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar")

        run = run_calibration(DATA / "lfw", DATA / "pairs_sample.txt", LABELS,
                              dataset=DATASET, pipeline=gallery.pipeline)
        table = run.calibration
        assert table is not None and table.model_id == HalvedEmbedder.model_id
        event = gallery.record_calibration(table, actor="evaluator")

        assert event.kind == "calibration.recorded"
        assert event.actor == "evaluator" and event.fields["model_id"] == HalvedEmbedder.model_id
        recorded = event.fields["calibration"]
        assert recorded["dataset"] == DATASET
        # 40 photos of 10 identities: 720 cross-identity pairs support FMR 1e-2, not 1e-3
        names = [p["name"] for p in recorded["points"]]
        assert "fmr-1e-2" in names and "fmr-1e-3" not in names
        row = next(r for r in table.rows if r.name == "fmr-1e-2")
        entry = next(p for p in recorded["points"] if p["name"] == "fmr-1e-2")
        assert (entry["n_non_mated"], entry["n_mated"]) == (row.n_non_mated, row.n_mated) == (
            720, 30)
        assert entry["measured_fmr"] == row.measured_fmr <= 0.01
        assert entry["fnmr"] == row.fnmr

        point = gallery.operating_point()
        assert (point.model_id, point.name, point.threshold) == (
            HalvedEmbedder.model_id, "fmr-1e-2", row.threshold)
        # halved descriptors, halved distances: the shipped threshold would accept anyone
        assert point.threshold < get_operating_point("fmr-1e-2").threshold / 1.5

        gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar")
        found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer",
                                 case_ref="C-1")
        assert (found.model_id, found.operating_point, found.threshold) == (
            HalvedEmbedder.model_id, point.name, point.threshold)
        assert [c.subject_id for c in found.candidates] == [KOFI]
        checked = gallery.verify_subject(identities[KOFI][3], KOFI, purpose="boarding",
                                         actor="officer", case_ref="C-2")
        assert checked.match and checked.threshold == point.threshold
        stranger = gallery.identify(identities["Colin_Powell"][0], purpose="boarding",
                                    actor="officer", case_ref="C-3")
        assert stranger.candidates == ()
        # the gate: an event at the gallery's point, a decision at the recorded threshold
        opened = events.open_event(gallery, "flight-1", purpose="boarding", actor="agent",
                                   valid_from=gallery.now(),
                                   valid_to=gallery.now() + timedelta(hours=1))
        assert opened.operating_point == point.name
        events.add_member(gallery, "flight-1", KOFI, actor="agent")
        probe = gallery.pipeline.embed_one(identities[KOFI][3]).embedding
        boarded = match_at_gate(gallery, "flight-1", probe, gate_id="G1", actor="gate")
        assert (boarded.outcome, boarded.subject_id, boarded.threshold) == (
            "match", KOFI, point.threshold)
        assert gallery.audit.verify().ok

        # the evaluation measures at the gallery's point with the gallery's pipeline
        audit = run_demographics(DATA / "lfw", LABELS, operating_point=point,
                                 pipeline=gallery.pipeline).demographics
        assert audit is not None and audit.threshold == point.threshold

    with Gallery.open(config, master_key=master_key, pipeline=pipeline) as reopened:
        assert reopened.operating_point() == point
        # thresholds edited in the database, outside facetrust: the audit check says so
        stored = json.loads(reopened.store.get_meta("calibrations") or "")
        stored[HalvedEmbedder.model_id]["points"][0]["threshold"] = 9.0
        with reopened.store.transaction():
            reopened.store.set_meta("calibrations", json.dumps(stored))
        report = reopened.audit.verify()
        assert not report.ok and report.first_broken_seq == event.seq
        assert "calibration was edited" in report.reason


def test_points_of_a_shipped_model_cannot_be_recorded_in_a_gallery(
    tmp_path: Path, identities: dict[str, list[Path]], master_key: crypto.MasterKey,
    embeddings: dict[Path, Embedding],
) -> None:
    model_id = next(iter(embeddings.values())).model_id
    table = calibrate(*sample_distances(identities, embeddings), model_id=model_id,
                      dataset=DATASET)
    assert any(row.supported for row in table.rows)
    config = GalleryConfig.in_folder(tmp_path, key_file=None)
    with Gallery.create(config, master_key) as gallery:
        shipped = gallery.operating_point(model_id)
        with pytest.raises(OperatingPointError, match="cannot override them"):
            gallery.record_calibration(table, actor="evaluator")
        assert gallery.store.get_meta("calibrations") is None
        assert list(gallery.audit.events(kind="calibration.recorded")) == []
        assert gallery.operating_point(model_id) == shipped


def test_points_recorded_in_a_postgresql_gallery_hold_after_reopening(
    tmp_path: Path, identities: dict[str, list[Path]], master_key: crypto.MasterKey,
    embeddings: dict[Path, Embedding], postgres_url: Callable[[], str],
) -> None:
    """The recorded points live in the gallery's database (its meta values), not in a
    file beside it: a PostgreSQL gallery keeps them as SQLite does."""
    # HalvedEmbedder's descriptors are the real ones halved: calibrate on those
    table = calibrate(*sample_distances(identities, embeddings, scale=0.5),
                      model_id=HalvedEmbedder.model_id, dataset=DATASET)
    config = GalleryConfig.in_folder(tmp_path, key_file=None, database_url=postgres_url(),
                                     keystore_url=postgres_url())
    pipeline = FacePipeline(Settings(), embedder=HalvedEmbedder())
    with Gallery.create(config, master_key, pipeline=pipeline) as gallery:
        event = gallery.record_calibration(table, actor="evaluator")
        point = gallery.operating_point()
    with Gallery.open(config, master_key=master_key, pipeline=pipeline) as gallery:
        assert gallery.operating_point() == point
        assert point.source.endswith("recorded by evaluator")
        consent(gallery, KOFI)
        gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar")
        found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer",
                                 case_ref="C-1")
        assert [c.subject_id for c in found.candidates] == [KOFI]
        assert found.threshold == point.threshold
        assert [e.seq for e in gallery.audit.events(kind="calibration.recorded")] == [event.seq]
        assert gallery.audit.verify().ok
