"""LFW View 2, 10 folds: alignment (5 vs 68 points) and test-time augmentation.

Every pair image is detected once (HOG, then dlib's CNN detector where HOG
finds nothing; the face nearest the centre), then aligned twice: with the
5-point landmarks facetrust uses and with dlib's 68-point shape predictor
(what face_recognition calls model="large"), and both chips are embedded by
the same network (ONNX Runtime); a third variant averages the 5-point chip's
descriptor with its mirror image's; a fourth averages 10 of dlib's random
jitters of the chip (``dlib.jitter_image``: small rotation, scale, shift and
mirror; dlib's ``num_jitters=10``). The View 2 protocol (threshold chosen on 9
folds, accuracy on the 10th) runs on each.

Usage::

    python benchmarks/study_alignment68.py [DATASET] [--out .bench/lfw/alignment68.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_state: dict[str, Any] = {}


def _init() -> None:
    import dlib
    import face_recognition_models

    from facetrust.config import Settings
    from facetrust.models.onnx_backend import OnnxResnetEmbedder
    from facetrust.pipeline import FacePipeline

    _state["hog"] = FacePipeline(Settings())
    _state["cnn"] = FacePipeline(Settings(detector="cnn"))
    _state["sp68"] = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    _state["net"] = OnnxResnetEmbedder(threads=1)


def _embed(path: str) -> tuple[list[float], ...] | None:
    import dlib

    from facetrust.images import load_image

    pixels = load_image(path)
    h, w = pixels.shape[:2]
    faces = _state["hog"].detect(pixels) or _state["cnn"].detect(pixels)
    if not faces:
        return None
    face = min(
        faces,
        key=lambda f: np.hypot(
            (f.box.left + f.box.right) / 2 - w / 2, (f.box.top + f.box.bottom) / 2 - h / 2
        ),
    )
    b = face.box
    rect = dlib.rectangle(int(b.left), int(b.top), int(b.right), int(b.bottom))
    chip68 = dlib.get_face_chip(pixels, _state["sp68"](pixels, rect), 150, 0.25)
    mirrored = np.ascontiguousarray(face.chip[:, ::-1])
    jitters = [np.asarray(j) for j in dlib.jitter_image(face.chip, 10)]
    vectors = _state["net"].embed([face.chip, chip68, mirrored, *jitters])
    return (
        vectors[0].tolist(),
        vectors[1].tolist(),
        ((vectors[0] + vectors[2]) / 2).tolist(),
        vectors[3:].mean(axis=0).tolist(),
    )


def ten_fold(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    from facetrust.evaluation.protocol import best_threshold

    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        ok_train = train & ~np.isnan(distances)
        threshold = best_threshold(same[ok_train], distances[ok_train])
        predicted = np.where(np.isnan(distances[test]), ~same[test], distances[test] <= threshold)
        accuracies.append(float(np.mean(predicted == same[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def main() -> None:
    from facetrust.evaluation.pairs import read_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(REPO.parent / "shared/datasets/lfw"))
    parser.add_argument("--out", default=str(REPO / ".bench" / "lfw" / "alignment68.json"))
    args = parser.parse_args()
    root = Path(args.dataset)
    pairs = read_pairs(root / "pairs.txt", root / "lfw-deepfunneled")
    images = sorted({p for pair in pairs for p in (pair.image_a, pair.image_b)})
    started = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context, initializer=_init) as pool:
        results = dict(zip(images, pool.map(_embed, images, chunksize=16), strict=True))
    seconds = time.perf_counter() - started
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    record: dict[str, Any] = {"images": len(images), "seconds": round(seconds, 1)}
    variants = ("landmarks5", "landmarks68", "landmarks5+mirror", "landmarks5+jitter10")
    for index, name in enumerate(variants):
        distances = np.array(
            [
                np.linalg.norm(np.subtract(results[p.image_a][index], results[p.image_b][index]))
                if results[p.image_a] is not None and results[p.image_b] is not None
                else np.nan
                for p in pairs
            ]
        )
        mean, std = ten_fold(distances, same, folds)
        record[name] = {"accuracy": round(mean, 5), "std": round(std, 5)}
        print(f"{name}: View 2 accuracy {mean:.4%} +- {std:.4%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
