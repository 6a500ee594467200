"""A custom embedder whose model id has no calibrated operating point: a gallery that
embeds with it refuses to enrol or search, saying the model has no calibrated
points and how to get them, and stores nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from custom_embedders import HalvedEmbedder
from facetrust import FacePipeline, Settings, crypto
from facetrust.errors import OperatingPointError
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.matching import operating_points
from gallery_fixtures import EVIDENCE_SHA256

KOFI = "Kofi_Annan"


def test_an_uncalibrated_model_is_refused_with_what_to_do(
    tmp_path: Path, identities: dict[str, list[Path]], master_key: crypto.MasterKey,
) -> None:
    assert operating_points(HalvedEmbedder.model_id) == []
    config = GalleryConfig.in_folder(tmp_path, key_file=None)
    pipeline = FacePipeline(Settings(), embedder=HalvedEmbedder())
    with Gallery.create(config, master_key, pipeline=pipeline) as gallery:
        gallery.add_subject(KOFI, actor="registrar")
        gallery.grant_consent(
            KOFI, ["boarding"], expires_at=gallery.now() + timedelta(days=30),
            evidence_ref="form-kofi", evidence_sha256=EVIDENCE_SHA256, notice_version="v1",
            actor="registrar",
        )
        for attempt in (
            lambda: gallery.enroll(KOFI, identities[KOFI][:1], actor="registrar"),
            lambda: gallery.identify(identities[KOFI][1], purpose="boarding",
                                     actor="officer", case_ref="C-1"),
        ):
            with pytest.raises(OperatingPointError) as refused:
                attempt()
            message = str(refused.value)
            assert "Model 'example-halved-v1' has no calibrated operating points" in message
            assert "facetrust evaluate calibrate" in message
            assert "dlib-resnet-v1" in message  # the models that have some
            assert not message.rstrip().endswith(":"), message  # never an empty list
        assert gallery.store.templates_of(KOFI) == []
