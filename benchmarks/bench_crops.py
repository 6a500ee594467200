"""Tight LFW face crops: failures to acquire and right decisions, facetrust vs face_recognition.

Each image of the chosen LFW View-2 pairs is read by facetrust's default
pipeline, through the evaluation's embedding cache (``--cache``; what
``facetrust evaluate pairs`` computed is reused); its face is cut out to the
detector box and scaled to 112 px and to 150 px (the tight crops face datasets
and ID pipelines hand out). On every crop, in the same run, the same worker
measures:

- ``facetrust crop``: pre-aligned input, ``embed_one(crop, "crop")`` (no detection);
- ``facetrust auto``: the default pipeline, ``embed_one(crop)`` (detection, recovery,
  face policy, quality);
- ``face_recognition auto``: ``face_locations`` (upsample 1, its default), then
  ``face_encodings``; several faces: the largest, no quality check;
- ``face_recognition whole``: ``face_encodings`` with the whole crop as the box
  (what a face_recognition user does with a crop).

Decisions on the pairs are at one distance threshold for everyone (0.6,
face_recognition's default tolerance; lower distance is more similar), a
failure to acquire counting as a wrong decision. The full photos, read by
facetrust's default pipeline, give the reference accuracy at that threshold.

Pairs are taken from the last ``--folds`` folds of View 2, leaving out every
identity whose name starts with A-C or K-M (the faces the crop and recovery
constants were looked at on) and the identities of tests/data.

Usage::

    python benchmarks/bench_crops.py [--lfw ../shared/datasets/lfw] [--folds 3]
        [--workers 2] [--cache PATH] [--out benchmarks/results/crops.json]

Needs ``pip install --no-deps face_recognition`` beside facetrust.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = 0.6
SIZES = (112, 150)
METHODS = ("facetrust crop", "facetrust auto", "face_recognition auto", "face_recognition whole")
#: Initials of the identities looked at while choosing the constants (left out).
TUNED_INITIALS = tuple("ABCKLM")

_pipeline: Any = None


def _init() -> None:
    global _pipeline
    from facetrust import FacePipeline, Settings

    _pipeline = FacePipeline(Settings.from_env(embedder_threads=1))


def _ours(image: np.ndarray, policy: str) -> list[float] | str:
    from facetrust.errors import FacetrustError

    try:
        return [float(v) for v in _pipeline.embed_one(image, policy).embedding.vector]
    except FacetrustError as error:
        return type(error).__name__


def _theirs(image: np.ndarray, whole: bool) -> list[float] | str:
    import face_recognition

    if whole:
        boxes = [(0, image.shape[1], image.shape[0], 0)]
    else:
        boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        if not boxes:
            return "no face"
        boxes = [max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))]
    return [float(v) for v in face_recognition.face_encodings(image, boxes)[0]]


def measure(job: tuple[str, tuple[float, float, float, float]]) -> dict[str, Any]:
    """Every method on both crop sizes of one photo, cut to its face box (in a worker)."""
    from facetrust import load_image
    from facetrust.evaluation.crops import cut
    from facetrust.faces import Box

    path, box = job
    pixels = load_image(path)
    record: dict[str, Any] = {"path": path}
    for size in SIZES:
        crop = cut(pixels, Box(*box), size, size)
        record[str(size)] = {
            "facetrust crop": _ours(crop, "crop"),
            "facetrust auto": _ours(crop, "dominant"),
            "face_recognition auto": _theirs(crop, whole=False),
            "face_recognition whole": _theirs(crop, whole=True),
        }
    return record


def full_photos(paths: Sequence[str], cache: str | None, workers: int) -> dict[str, Any]:
    """The default pipeline's result on each full photo: its face (box, vector) or refusal."""
    from facetrust.evaluation.cache import EmbeddingCache

    with EmbeddingCache(cache) as store:
        images = store.get_or_compute(paths, workers=workers, progress=True)
    return {
        p: (i.error_type or "NoFaceFound") if not i.acquired else i.faces[0]
        for p, i in images.items()
    }


def read_pairs(lfw: Path, folds: int) -> list[tuple[str, str, bool]]:
    from facetrust.evaluation.pairs import read_pairs as read

    pairs = read(lfw / "pairs.txt", lfw / "lfw-deepfunneled")
    last = max(p.fold for p in pairs)
    tests = {d.name for d in (REPO / "tests" / "data" / "lfw").iterdir()}

    def kept(image: str) -> bool:
        name = Path(image).parent.name
        return not name.startswith(TUNED_INITIALS) and name not in tests

    return [
        (p.image_a, p.image_b, p.same)
        for p in pairs
        if p.fold > last - folds and kept(p.image_a) and kept(p.image_b)
    ]


def decide(
    pairs: Sequence[tuple[str, str, bool]], vectors: dict[str, list[float] | str]
) -> dict[str, Any]:
    """Right decisions at THRESHOLD, failures to acquire counted as wrong."""
    right = fta = 0
    for a, b, same in pairs:
        va, vb = vectors[a], vectors[b]
        if isinstance(va, str) or isinstance(vb, str):
            fta += 1
            continue
        distance = float(np.linalg.norm(np.asarray(va) - np.asarray(vb)))
        right += (distance <= THRESHOLD) == same
    return {"pairs": len(pairs), "right": right, "accuracy": right / len(pairs),
            "fta_pairs": fta}


def summarise(
    records: list[dict[str, Any]], full: dict[str, Any], pairs: Sequence[tuple[str, str, bool]]
) -> dict[str, Any]:
    usable = records
    kept = {r["path"] for r in usable}
    crop_pairs = [p for p in pairs if p[0] in kept and p[1] in kept]
    result: dict[str, Any] = {
        "images": len(full),
        "images_cropped": len(usable),
        "full_photo_refused": len(full) - len(usable),
        "pairs": len(pairs),
        "crop_pairs": len(crop_pairs),
        "threshold": THRESHOLD,
        "full_photo": decide(
            crop_pairs, {p: [float(v) for v in full[p].vector] for p in kept}
        ),
    }
    for size in SIZES:
        for method in METHODS:
            vectors = {r["path"]: r[str(size)][method] for r in usable}
            failures: dict[str, int] = {}
            for value in vectors.values():
                if isinstance(value, str):
                    failures[value] = failures.get(value, 0) + 1
            result[f"{method} {size}"] = {
                "fta_images": sum(failures.values()),
                "fta_rate": sum(failures.values()) / len(usable),
                "fta_by_reason": failures,
                **decide(crop_pairs, vectors),
            }
    return result


def table(summary: dict[str, Any]) -> str:
    full = summary["full_photo"]
    lines = [
        f"{summary['images_cropped']} crops per size from {summary['images']} LFW images "
        f"({summary['full_photo_refused']} full photos refused, not cropped); "
        f"{summary['crop_pairs']} View-2 pairs; threshold {THRESHOLD} for all.",
        f"{'method':32s} {'FTA images':>12s} {'FTA rate':>9s} {'right':>12s} {'accuracy':>9s}",
        f"{'full photos (facetrust)':32s} {'-':>12s} {'-':>9s} "
        f"{full['right']:>6d}/{full['pairs']:<5d} {full['accuracy']:9.4f}",
    ]
    for size in SIZES:
        for method in METHODS:
            row = summary[f"{method} {size}"]
            lines.append(
                f"{method + f' {size}px':32s} {row['fta_images']:>12d} {row['fta_rate']:9.4f} "
                f"{row['right']:>6d}/{row['pairs']:<5d} {row['accuracy']:9.4f}"
            )
        ours, theirs = summary[f"facetrust auto {size}"], summary[f"face_recognition auto {size}"]
        lines.append(
            f"  {size}px ratio facetrust/face_recognition (auto): right "
            f"{ours['right'] / max(theirs['right'], 1):.3f}, FTA images "
            f"{ours['fta_images']} vs {theirs['fta_images']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--folds", type=int, default=3, help="last View-2 folds used")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache", default=None, help="embedding cache (default: the user's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/crops.json")
    args = parser.parse_args()
    pairs = read_pairs(args.lfw, args.folds)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    start = time.perf_counter()
    full = full_photos(paths, args.cache, args.workers)
    jobs = [
        (p, (f.box.left, f.box.top, f.box.right, f.box.bottom))
        for p, f in full.items()
        if not isinstance(f, str)
    ]
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_init) as pool:
        records = list(
            tqdm(pool.map(measure, jobs, chunksize=4), total=len(jobs), unit="img",
                 desc="crops")
        )
    summary = summarise(records, full, pairs)
    summary["seconds"] = time.perf_counter() - start
    summary["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1min": os.getloadavg()[0]}
    print(table(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
