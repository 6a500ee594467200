"""Custom embedders, as a library user injects one into :class:`FacePipeline`: each
wraps the real descriptor network (no mock) and changes its output in a known way,
under a model id of its own."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from facetrust import Settings
from facetrust.models.selection import default_embedder


class WrappedEmbedder:
    """The real network (``inner``) with its chip geometry and dimension."""

    model_id = "example-wrapped-v1"
    backend = "example"

    def __init__(self) -> None:
        self.inner = default_embedder(Settings())
        self.chip_size = self.inner.chip_size
        self.chip_padding = self.inner.chip_padding
        self.dimension = self.inner.dimension

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        return self.inner.embed(chips)


class MirroredEmbedder(WrappedEmbedder):
    """Each chip's descriptor averaged with its mirror image's, under the model id that
    averaging is calibrated as (not the default pipeline's id)."""

    model_id = "dlib-resnet-v1+mirror"

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        views = [view for chip in chips for view in (chip, np.ascontiguousarray(chip[:, ::-1]))]
        both = self.inner.embed(views).reshape(len(chips), 2, self.dimension)
        return both.mean(axis=1).astype(np.float32)


class HalvedEmbedder(WrappedEmbedder):
    """The real network's descriptors scaled by one half, under a model id that the
    calibration table has never heard of."""

    model_id = "example-halved-v1"

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        return (self.inner.embed(chips) * 0.5).astype(np.float32)
