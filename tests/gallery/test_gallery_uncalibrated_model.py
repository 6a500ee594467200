"""A custom embedder whose model id has no calibrated operating point: a gallery that
embeds with it refuses to enrol or search, saying the model has no calibrated
points and how to get them, and stores nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facetrust import FacePipeline, Settings, crypto
from facetrust.errors import OperatingPointError
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.matching import operating_points
from facetrust.models.selection import default_embedder
from gallery_fixtures import EVIDENCE_SHA256

KOFI = "Kofi_Annan"


class HalvedEmbedder:
    """A custom embedder, as a library user injects one into :class:`FacePipeline`: the
    real network's descriptors scaled by one half, under a model id of its own that the
    calibration table has never heard of."""

    model_id = "example-halved-v1"
    backend = "example"

    def __init__(self) -> None:
        self.inner = default_embedder(Settings())
        self.chip_size = self.inner.chip_size
        self.chip_padding = self.inner.chip_padding
        self.dimension = self.inner.dimension

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        return (self.inner.embed(chips) * 0.5).astype(np.float32)


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
