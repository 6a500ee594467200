"""Test-time augmentation: one descriptor from several views of the same aligned chip.

An :class:`AugmentedEmbedder` wraps any :class:`~facetrust.models.base.Embedder`:
each chip is embedded as it is and in fixed variants (its mirror image; small
fixed zooms and turns), and the descriptors are averaged, as dlib's
``num_jitters`` averages its random jitters. The variants are fixed, not
random, so the same chip always gives the same descriptor.

Averaged descriptors are shorter than single ones, so their distances are
not on the plain network's scale: an augmented embedder has its own model id
(``dlib-resnet-v1+mirror``), templates of different ids are never compared,
caches key on it, and each id has its own operating points.

Choices (:attr:`~facetrust.config.Settings.augmentation`):

``"none"``
    The chip alone (1 network pass per face).
``"mirror"``
    The chip and its mirror image (2 passes).
``"jitter"``
    The chip and its mirror, each also zoomed in 4% turned 3 degrees one way
    and zoomed out 4% turned 3 degrees the other way (6 passes).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from ..errors import InvalidParameter
from .base import Embedder

#: The augmentation choices, cheapest first.
AUGMENTATIONS = ("none", "mirror", "jitter")

#: (scale, degrees counter-clockwise) of the views "jitter" adds, each also mirrored.
JITTER_VIEWS = ((1.0, 0.0), (1.04, 3.0), (0.96, -3.0))


def check_augmentation(augmentation: str) -> str:
    """``augmentation`` if it is one of :data:`AUGMENTATIONS`; :class:`InvalidParameter` if not."""
    if augmentation not in AUGMENTATIONS:
        raise InvalidParameter(
            f"The 'augmentation' setting must be one of {', '.join(AUGMENTATIONS)}. "
            f"Got {augmentation!r} instead."
        )
    return augmentation


def augmented_model_id(model_id: str, augmentation: str) -> str:
    """The model id of ``model_id``'s descriptors averaged over ``augmentation``'s views.

    ``"none"`` keeps ``model_id``; the others append ``+<augmentation>``
    (``dlib-resnet-v1+mirror``).
    """
    check_augmentation(augmentation)
    return model_id if augmentation == "none" else f"{model_id}+{augmentation}"


def views_per_chip(augmentation: str) -> int:
    """How many network passes ``augmentation`` costs per face (1, 2 or 6)."""
    return {"none": 1, "mirror": 2, "jitter": 2 * len(JITTER_VIEWS)}[
        check_augmentation(augmentation)
    ]


def augmented_views(
    chip: npt.NDArray[np.uint8], augmentation: str
) -> list[npt.NDArray[np.uint8]]:
    """The views of one (size, size, 3) uint8 chip that ``augmentation`` embeds, chip first."""
    check_augmentation(augmentation)
    if augmentation == "none":
        return [chip]
    if augmentation == "mirror":
        return [chip, np.ascontiguousarray(chip[:, ::-1])]
    size = chip.shape[0]
    views = []
    for scale, degrees in JITTER_VIEWS:
        if scale == 1.0 and degrees == 0.0:
            view = chip
        else:
            matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), degrees, scale)
            view = np.asarray(
                cv2.warpAffine(
                    chip, matrix, (size, size), flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101,
                ),
                dtype=np.uint8,
            )
        views += [view, np.ascontiguousarray(view[:, ::-1])]
    return views


class AugmentedEmbedder:
    """An embedder whose descriptor is the mean over fixed views of each chip.

    Parameters
    ----------
    base : Embedder
        Embeds the views (``chip_size``, ``chip_padding`` and ``dimension`` are its own).
    augmentation : {"mirror", "jitter", "none"}
        Which views; see the module documentation. ``"none"`` is allowed and
        gives the base embedder's descriptors under its own model id.

    Attributes
    ----------
    model_id : str
        ``<base model id>+<augmentation>`` (the base id for ``"none"``).
    backend : str
        The base embedder's.
    """

    def __init__(self, base: Embedder, augmentation: str) -> None:
        self.base = base
        self.augmentation = check_augmentation(augmentation)
        self.model_id = augmented_model_id(base.model_id, augmentation)
        self.backend = base.backend
        self.chip_size = base.chip_size
        self.chip_padding = base.chip_padding
        self.dimension = base.dimension

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Descriptors of shape (len(chips), dimension), float32: means over each chip's views."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        views = [view for chip in chips for view in augmented_views(chip, self.augmentation)]
        vectors = self.base.embed(views).reshape(len(chips), -1, self.dimension)
        means: npt.NDArray[np.float32] = vectors.mean(axis=1).astype(np.float32)
        return means
