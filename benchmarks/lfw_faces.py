"""Every face of LFW's View-2 images, measured once, for the studies of issue 18.

For each image of ``pairs.txt`` the pipeline's default detection runs (HOG,
padded retry), and on images where it finds nothing dlib's CNN detector, as
``facetrust evaluate pairs`` does. Each face keeps its box, detector score,
landmarks, quality measures (:mod:`facetrust.quality`) and the descriptors
of the six views of :func:`facetrust.models.augmentation.augmented_views`
(``"jitter"``): view 0 is the chip, view 1 its mirror, so ``"none"``,
``"mirror"`` and ``"jitter"`` are all means over a prefix or all of them.

The result is kept in an ``.npz`` file (``--faces``), so the TTA study and
the quality study read the same measurements. :func:`cached_images` turns it
into the :class:`~facetrust.evaluation.cache.CachedImage` mapping the
evaluation functions take.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from facetrust import Box, FacePipeline, Settings
from facetrust.evaluation.cache import CachedFace, CachedImage
from facetrust.evaluation.pairs import Pair, read_pairs
from facetrust.images import load_image
from facetrust.models.augmentation import augmented_views
from facetrust.models.onnx_backend import OnnxResnetEmbedder

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "lfw"
DEFAULT_FACES = REPO / ".bench" / "lfw_view2_faces"
#: Views of each chip kept: those of the "jitter" augmentation, or its first two
#: (chip and mirror: "none" and "mirror" only), which cost a third.
VIEWS = 6
#: Mean over these views gives each augmentation's descriptor.
VIEWS_OF = {"none": 1, "mirror": 2, "jitter": 6}

_pipelines: dict[str, FacePipeline] = {}
_views: list[int] = [VIEWS]


def _init(views: int) -> None:
    _views[0] = views
    settings = Settings.from_env(embedder_threads=1)
    embedder = OnnxResnetEmbedder(threads=1)
    _pipelines["hog"] = FacePipeline(settings, embedder=embedder)
    _pipelines["cnn"] = FacePipeline(
        Settings.from_env(detector="cnn", embedder_threads=1), embedder=embedder
    )


def _measure(path: str) -> dict[str, Any]:
    pixels = load_image(path)
    faces = _pipelines["hog"].faces_in_pixels(pixels)
    detector = "hog"
    if not faces:
        faces, detector = _pipelines["cnn"].faces_in_pixels(pixels), "cnn"
    views = _views[0]
    chips = [v for face in faces for v in augmented_views(face.chip, "jitter")[:views]]
    vectors = _pipelines["hog"].embedder.embed(chips).reshape(len(faces), views, -1)
    return {
        "path": path,
        "size": (pixels.shape[1], pixels.shape[0]),
        "detector": detector,
        "boxes": [(f.box.left, f.box.top, f.box.right, f.box.bottom) for f in faces],
        "confidence": [f.confidence for f in faces],
        "landmarks": [f.landmarks.points for f in faces],
        "quality": [
            (f.quality.inter_eye_px, f.quality.sharpness, f.quality.yaw, f.quality.roll_deg)
            for f in faces
        ],
        "vectors": vectors,
    }


def measure_faces(
    paths: Sequence[str], workers: int = 2, views: int = VIEWS
) -> dict[str, npt.NDArray[Any]]:
    """Detect, measure and embed (``views`` views) every face of ``paths``; arrays for an npz."""
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init, initargs=(views,)) as pool:
        results = list(pool.imap(_measure, paths, chunksize=16))
    image_of, boxes, confidence, landmarks, quality, vectors = [], [], [], [], [], []
    for index, result in enumerate(results):
        for face in range(len(result["boxes"])):
            image_of.append(index)
            boxes.append(result["boxes"][face])
            confidence.append(result["confidence"][face])
            landmarks.append(result["landmarks"][face])
            quality.append(result["quality"][face])
        vectors.extend(result["vectors"])
    return {
        "paths": np.array([r["path"] for r in results]),
        "sizes": np.array([r["size"] for r in results], dtype=np.int32),
        "detector": np.array([r["detector"] for r in results]),
        "image_of": np.array(image_of, dtype=np.int32),
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
        "confidence": np.array(confidence, dtype=np.float64),
        "landmarks": np.array(landmarks, dtype=np.float64).reshape(-1, 5, 2),
        # inter_eye_px, sharpness, yaw, roll_deg
        "quality": np.array(quality, dtype=np.float64).reshape(-1, 4),
        "vectors": np.array(vectors, dtype=np.float32).reshape(-1, views, 128),
        "seconds": np.array(time.perf_counter() - start),
    }


def view2_pairs(dataset: Path = DATASET) -> list[Pair]:
    """LFW View 2's 6,000 pairs in 10 folds."""
    return read_pairs(dataset / "pairs.txt", dataset / "lfw-deepfunneled")


def fold_file(folder: Path, fold: int) -> Path:
    """Where the measurements of one View-2 fold are kept."""
    return folder / f"fold{fold}.npz"


def measure_folds(
    folder: Path,
    dataset: Path = DATASET,
    workers: int = 2,
    *,
    folds: Sequence[int] = tuple(range(10)),
    views: int = 2,
) -> None:
    """Measure the images of each fold of ``folds`` not yet in ``folder``, one file per fold.

    Folds of View 2 are identity-disjoint, so each image belongs to one fold,
    and an interrupted run keeps every finished fold.
    """
    pairs = view2_pairs(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    for fold in folds:
        target = fold_file(folder, fold)
        if target.is_file():
            continue
        paths = sorted({p for pair in pairs if pair.fold == fold
                        for p in (pair.image_a, pair.image_b)})
        arrays = measure_faces(paths, workers, views)
        np.savez_compressed(target, **arrays)  # type: ignore[arg-type]
        print(f"fold {fold}: {len(paths)} images in {float(arrays['seconds']):.0f} s", flush=True)


def load_faces(
    folder: Path = DEFAULT_FACES, *, views: int = 2, folds: Sequence[int] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The measurements of the folds kept in ``folder`` (``folds``, or all present) merged.

    Only the first ``views`` views of each face are kept; a fold measured with
    fewer is left out.
    """
    merged: dict[str, list[npt.NDArray[Any]]] = {}
    offset = 0
    for fold in folds if folds is not None else range(10):
        path = fold_file(folder, fold)
        if not path.is_file():
            continue
        with np.load(path) as data:
            if data["vectors"].shape[1] < views:
                continue
            for name in data.files:
                value = data[name]
                if name == "vectors":
                    value = value[:, :views]
                elif name == "image_of":
                    value = value + offset
                merged.setdefault(name, []).append(value)
            offset += len(data["paths"])
    merged.pop("seconds", None)
    if not merged:
        raise FileNotFoundError(f"no measured fold with {views} views in {folder}")
    return {name: np.concatenate(values) for name, values in merged.items()}


def measured_folds(folder: Path, views: int = 2) -> list[int]:
    """The folds kept in ``folder`` with at least ``views`` views."""
    found = []
    for fold in range(10):
        path = fold_file(folder, fold)
        if path.is_file():
            with np.load(path) as data:
                if data["vectors"].shape[1] >= views:
                    found.append(fold)
    return found


def cached_images(
    faces: dict[str, npt.NDArray[Any]], augmentation: str = "none"
) -> dict[str, CachedImage]:
    """Path -> CachedImage with ``augmentation``'s descriptors, largest face first."""
    views = VIEWS_OF[augmentation]
    if faces["vectors"].shape[1] < views:
        raise ValueError(f"these measurements hold too few views for {augmentation!r}")
    vectors = faces["vectors"][:, :views].mean(axis=1).astype(np.float32)
    by_image: dict[int, list[CachedFace]] = {}
    for row, image in enumerate(faces["image_of"].tolist()):
        box = Box(*faces["boxes"][row].tolist())
        by_image.setdefault(image, []).append(
            CachedFace(box, float(faces["confidence"][row]), vectors[row])
        )
    out = {}
    for index, path in enumerate(faces["paths"].tolist()):
        width, height = faces["sizes"][index].tolist()
        found = sorted(by_image.get(index, []), key=lambda f: f.box.area, reverse=True)
        out[str(path)] = CachedImage("", int(width), int(height), tuple(found))
    return out


def subject_rows(faces: dict[str, npt.NDArray[Any]]) -> dict[str, int]:
    """Path -> row of the face nearest the image centre (the evaluation's subject face)."""
    best: dict[int, tuple[float, int]] = {}
    for row, image in enumerate(faces["image_of"].tolist()):
        left, top, right, bottom = faces["boxes"][row]
        width, height = faces["sizes"][image]
        offset = float(np.hypot((left + right - width) / 2, (top + bottom - height) / 2))
        area = (right - left) * (bottom - top)
        if image not in best or (offset, -area) < (best[image][0], -_area(faces, best[image][1])):
            best[image] = (offset, row)
    return {str(faces["paths"][i]): row for i, (_, row) in best.items()}


def _area(faces: dict[str, npt.NDArray[Any]], row: int) -> float:
    left, top, right, bottom = faces["boxes"][row]
    return float((right - left) * (bottom - top))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of fold files")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--views", type=int, default=2, choices=(2, VIEWS))
    parser.add_argument("--folds", type=int, nargs="*", default=list(range(10)))
    arguments = parser.parse_args()
    measure_folds(arguments.faces, arguments.dataset, arguments.workers,
                  folds=arguments.folds, views=arguments.views)
