"""Which pipeline choices move LFW accuracy: jitter, 68-point alignment, detection upsampling.

Usage::

    python benchmarks/study_lfw_choices.py [DATASET] [--folds 0] [--out .bench/lfw]

On the pairs of the given View 2 folds (600 pairs each) every image is detected
once (facetrust's HOG pass; dlib's CNN detector where HOG finds nothing) and the
face nearest the centre is embedded under each variant:

- ``baseline``: facetrust's pipeline (5-point landmarks, 150 px chip, padding 0.25)
- ``jitter10``: dlib's ``num_jitters=10`` (mean of 10 randomly jittered chips)
- ``landmarks68``: chip aligned with the 68-point shape predictor instead of 5-point
- ``upsample1``: HOG detection with one upsampling on the first pass

It prints, per variant, the EER and the accuracy at the best threshold on these
pairs (optimistic, but the same rule for every variant: compare them with each
other, not with the 10-fold number), and writes ``choices.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "jitter10", "landmarks68", "upsample1")


def _embed_variants(path: str) -> dict[str, list[float] | None]:
    import dlib
    import face_recognition_models

    from facetrust.config import Settings
    from facetrust.faces import Box
    from facetrust.images import load_image
    from facetrust.models.dlib_backend import model_path
    from facetrust.pipeline import FacePipeline

    state = _embed_variants.__dict__
    if "pipeline" not in state:
        state["pipeline"] = FacePipeline(Settings())
        state["cnn"] = FacePipeline(Settings(detector="cnn"))
        sp68 = face_recognition_models.pose_predictor_model_location()
        state["sp68"] = dlib.shape_predictor(sp68)
        state["net"] = dlib.face_recognition_model_v1(str(model_path("resnet")))
        state["hog"] = dlib.get_frontal_face_detector()
    pixels = load_image(path)
    h, w = pixels.shape[:2]

    def centre(boxes: list[Any]) -> Any:
        return min(
            boxes,
            key=lambda b: np.hypot((b.left + b.right) / 2 - w / 2, (b.top + b.bottom) / 2 - h / 2),
        )

    faces = state["pipeline"].detect(pixels) or state["cnn"].detect(pixels)
    out: dict[str, list[float] | None] = dict.fromkeys(VARIANTS)
    if not faces:
        return out
    face = centre([f.box for f in faces])
    chosen = next(f for f in faces if f.box is face)
    net = state["net"]
    out["baseline"] = list(net.compute_face_descriptor(chosen.chip))
    out["jitter10"] = list(net.compute_face_descriptor(chosen.chip, 10))
    rect = dlib.rectangle(int(face.left), int(face.top), int(face.right), int(face.bottom))
    chip68 = dlib.get_face_chip(pixels, state["sp68"](pixels, rect), 150, 0.25)
    out["landmarks68"] = list(net.compute_face_descriptor(chip68))
    rects = state["hog"](pixels, 1)
    if len(rects):
        boxes = [Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects]
        b = centre(boxes)
        landmarks = state["pipeline"].landmarker.locate(pixels, b)
        chip = state["pipeline"].landmarker.align(pixels, b, landmarks, 150, 0.25)
        out["upsample1"] = list(net.compute_face_descriptor(chip))
    else:
        out["upsample1"] = out["baseline"]
    return out


def main(argv: list[str] | None = None) -> int:
    from facetrust.evaluation.metrics import equal_error_rate
    from facetrust.evaluation.pairs import read_pairs
    from facetrust.evaluation.protocol import best_threshold

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", default=str(REPO.parent / "shared/datasets/lfw"))
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / ".bench" / "lfw"))
    args = parser.parse_args(argv)
    dataset = Path(args.dataset)
    if not (dataset / "pairs.txt").is_file():
        print(f"skipped: no LFW copy at {dataset}")
        return 0
    pairs = [
        p
        for p in read_pairs(dataset / "pairs.txt", dataset / "lfw-deepfunneled")
        if p.fold in args.folds
    ]
    paths = sorted({x for p in pairs for x in (p.image_a, p.image_b)})
    with ProcessPoolExecutor(args.workers) as pool:
        vectors = dict(zip(paths, pool.map(_embed_variants, paths, chunksize=8), strict=True))
    record: dict[str, Any] = {"folds": args.folds, "pairs": len(pairs), "images": len(paths)}
    print(f"{len(pairs)} pairs of folds {args.folds}, {len(paths)} images")
    print(f"{'variant':<12} {'pairs':>6} {'EER':>8} {'best-threshold acc':>19} {'threshold':>10}")
    for variant in VARIANTS:
        y, d = [], []
        for p in pairs:
            a, b = vectors[p.image_a][variant], vectors[p.image_b][variant]
            if a is None or b is None:
                continue
            y.append(p.same)
            d.append(float(np.linalg.norm(np.asarray(a) - np.asarray(b))))
        labels, distances = np.array(y), np.array(d)
        eer, _ = equal_error_rate(labels, distances)
        t = best_threshold(labels, distances)
        acc = float(np.mean((distances <= t) == labels))
        record[variant] = {
            "pairs": len(y),
            "eer": eer,
            "best_threshold_accuracy": acc,
            "threshold": t,
        }
        print(f"{variant:<12} {len(y):>6} {eer:>8.4f} {acc:>19.4f} {t:>10.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "choices.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
