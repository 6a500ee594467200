"""ONNX Runtime vs dlib for the face descriptor: speed, equivalence, LFW decisions.

The reference is dlib-bin's ``compute_face_descriptor`` (what
``DlibResnetEmbedder`` calls); ours is the same network converted to ONNX and
run by ONNX Runtime with one intra-op thread per core. Everything is measured
in the same run on the same machine:

1. ms per face at batch 1, 8 and 32 (rounds of both backends interleaved, so
   load from other processes hits both alike; the median round counts);
2. end-to-end images/s of ``embed_many`` on real photos with each backend,
   including worker/thread splits (is oversubscription a problem?);
3. descriptors of the aligned chips of every LFW View-2 image from both
   backends: max and mean absolute difference, and the decisions on all
   6,000 pairs at the default operating point.

Usage::

    python benchmarks/bench_onnx.py [--lfw ../shared/datasets/lfw] [--images 500]
        [--timing-chips 256] [--pair-images 0] [--out benchmarks/results/onnx.json]

Photos in which the detector finds no face (44 of the 7,701) get a chip cut
from the median detected box, so all 6,000 pairs are compared.
``--pair-images N`` limits step 3 to the first N pair images (0 = all 7,701,
about 10 minutes of dlib on one core). Needs ``pip install -e '.[onnx,bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import facetrust
from facetrust import Box, FacePipeline, Settings
from facetrust.models.dlib_backend import DlibResnetEmbedder
from facetrust.models.onnx_backend import OnnxResnetEmbedder

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = facetrust.get_operating_point("dlib-default").threshold
Chips = npt.NDArray[np.uint8]
Vectors = npt.NDArray[np.float32]


def read_pairs(pairs_file: Path, images: Path) -> list[tuple[Path, Path, bool]]:
    """The 6,000 pairs of LFW View 2 as (image a, image b, same person)."""

    def path(name: str, number: str) -> Path:
        return images / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for line in pairs_file.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
            pairs.append((path(parts[0], parts[1]), path(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append((path(parts[0], parts[1]), path(parts[2], parts[3]), False))
    return pairs


def centre_index(boxes: Sequence[tuple[float, float, float, float]], size: tuple[int, int]) -> int:
    """Index of the box whose centre is nearest the image centre (LFW's subject)."""
    height, width = size
    return int(
        np.argmin(
            [
                ((left + right - width) / 2) ** 2 + ((top + bottom - height) / 2) ** 2
                for left, top, right, bottom in boxes
            ]
        )
    )


def pair_images(pairs: Sequence[tuple[Path, Path, bool]]) -> list[Path]:
    """Unique images of ``pairs`` in first-seen order."""
    return list(dict.fromkeys(p for a, b, _ in pairs for p in (a, b)))


def cut_chips(paths: Sequence[Path], fallback: bool = False) -> tuple[list[Path], Chips, int]:
    """The aligned chip of the face nearest the centre (LFW's subject) of each photo.

    With ``fallback``, photos where the detector finds no face get a chip cut
    from the median detected box instead (LFW faces are centred), so every
    image of the pairs has a chip; the count of such photos is returned.
    """
    pipeline = FacePipeline(Settings(embedder="dlib"))
    found: dict[Path, Chips] = {}
    boxes_kept = []
    for number, path in enumerate(paths, 1):
        faces = pipeline.detect(path)
        if faces:
            boxes = [(f.box.left, f.box.top, f.box.right, f.box.bottom) for f in faces]
            centre = faces[centre_index(boxes, (250, 250))]
            assert centre.chip is not None
            found[path] = centre.chip
            boxes_kept.append(boxes[centre_index(boxes, (250, 250))])
        if number % 1000 == 0:
            print(f"  chips: {number}/{len(paths)}", flush=True)
    missing = [p for p in paths if p not in found]
    if fallback and missing:
        box = Box(*np.median(np.asarray(boxes_kept), axis=0).tolist())
        for path in missing:
            pixels = facetrust.load_image(path)
            landmarks = pipeline.landmarker.locate(pixels, box)
            found[path] = pipeline.landmarker.align(pixels, box, landmarks, 150, 0.25)
    kept = [p for p in paths if p in found]
    return kept, np.stack([found[p] for p in kept]), len(missing) if fallback else 0


def time_batches(
    chips: Chips, batch: int, embed: Callable[[Sequence[npt.NDArray[np.uint8]]], Vectors]
) -> float:
    """Seconds to embed ``chips`` in batches of ``batch``."""
    start = time.perf_counter()
    for first in range(0, len(chips), batch):
        embed(list(chips[first : first + batch]))
    return time.perf_counter() - start


def per_face_timing(chips: Chips, threads: int, rounds: int) -> dict[str, Any]:
    dlib_embedder, onnx_embedder = DlibResnetEmbedder(), OnnxResnetEmbedder(threads=threads)
    dlib_embedder.embed(list(chips[:2]))  # load both models before timing
    onnx_embedder.embed(list(chips[:2]))
    results: dict[str, Any] = {}
    for batch in (1, 8, 32):
        times: dict[str, list[float]] = {"dlib": [], "onnxruntime": []}
        for _ in range(rounds):
            times["dlib"].append(time_batches(chips, batch, dlib_embedder.embed))
            times["onnxruntime"].append(time_batches(chips, batch, onnx_embedder.embed))
        ms = {name: 1000 * statistics.median(t) / len(chips) for name, t in times.items()}
        results[str(batch)] = {
            "dlib_ms_per_face": round(ms["dlib"], 2),
            "onnxruntime_ms_per_face": round(ms["onnxruntime"], 2),
            "speedup": round(ms["dlib"] / ms["onnxruntime"], 2),
            "rounds_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        }
        print(
            f"  batch {batch:>2}: dlib {ms['dlib']:6.1f} ms/face   onnxruntime "
            f"{ms['onnxruntime']:6.1f} ms/face   x{ms['dlib'] / ms['onnxruntime']:.2f}",
            flush=True,
        )
    return results


def end_to_end(paths: Sequence[Path]) -> dict[str, Any]:
    configurations = [
        ("dlib, 1 process", Settings(embedder="dlib"), 1),
        ("dlib, 2 workers", Settings(embedder="dlib"), 2),
        ("onnxruntime, 1 process x 2 threads", Settings(embedder="onnx", embedder_threads=2), 1),
        ("onnxruntime, 2 workers x 1 thread (default)", Settings(embedder="onnx"), 2),
        (
            "onnxruntime, 2 workers x 2 threads (oversubscribed)",
            Settings(embedder="onnx", embedder_threads=2),
            2,
        ),
    ]
    # Convert once before timing (the cache is per machine, not per run).
    OnnxResnetEmbedder().embed([np.zeros((150, 150, 3), np.uint8)])
    results = {}
    for label, settings, workers in configurations:
        start = time.perf_counter()
        faces = sum(len(r.faces) for r in facetrust.embed_many(paths, settings, workers=workers))
        seconds = time.perf_counter() - start
        results[label] = {
            "images": len(paths),
            "faces": faces,
            "seconds": round(seconds, 2),
            "images_per_s": round(len(paths) / seconds, 2),
        }
        print(f"  {label:<52} {len(paths) / seconds:6.1f} images/s", flush=True)
    return results


def equivalence(
    pairs: Sequence[tuple[Path, Path, bool]], paths: Sequence[Path], chips: Chips
) -> dict[str, Any]:
    start = time.perf_counter()
    ours = OnnxResnetEmbedder(threads=2).embed(list(chips))
    onnx_seconds = time.perf_counter() - start
    print(f"  onnxruntime: {len(chips)} chips in {onnx_seconds:.0f} s", flush=True)
    start = time.perf_counter()
    reference = np.concatenate(
        [DlibResnetEmbedder().embed(list(chips[i : i + 32])) for i in range(0, len(chips), 32)]
    )
    dlib_seconds = time.perf_counter() - start
    print(f"  dlib: {len(chips)} chips in {dlib_seconds:.0f} s", flush=True)
    difference = np.abs(ours - reference)
    index = {path: i for i, path in enumerate(paths)}
    decisions: dict[str, int] = {"same": 0, "different": 0, "skipped_no_face": 0}
    correct = {"dlib": 0, "onnxruntime": 0}
    cases = []
    max_gap = 0.0
    for a, b, same in pairs:
        if a not in index or b not in index:
            decisions["skipped_no_face"] += 1
            continue
        d_ours = float(np.linalg.norm(ours[index[a]] - ours[index[b]]))
        d_ref = float(np.linalg.norm(reference[index[a]] - reference[index[b]]))
        max_gap = max(max_gap, abs(d_ours - d_ref))
        correct["onnxruntime"] += (d_ours <= THRESHOLD) == same
        correct["dlib"] += (d_ref <= THRESHOLD) == same
        if (d_ours <= THRESHOLD) == (d_ref <= THRESHOLD):
            decisions["same"] += 1
        else:
            decisions["different"] += 1
            cases.append({"a": a.name, "b": b.name, "onnxruntime": d_ours, "dlib": d_ref})
    compared = decisions["same"] + decisions["different"]
    return {
        "chips": len(chips),
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "pairs": len(pairs),
        "pairs_compared": compared,
        "decisions": decisions,
        "disagreements": cases,
        "max_abs_distance_gap": max_gap,
        "accuracy_at_threshold": {
            k: round(v / compared, 5) if compared else None for k, v in correct.items()
        },
        "threshold": THRESHOLD,
        "seconds": {"onnxruntime": round(onnx_seconds, 1), "dlib": round(dlib_seconds, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--images", type=int, default=500, help="photos for end-to-end")
    parser.add_argument("--timing-chips", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pair-images", type=int, default=0, help="0 = all 7,701")
    parser.add_argument("--skip", nargs="*", default=[], choices=["timing", "e2e", "lfw"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/onnx.json")
    args = parser.parse_args()
    pairs_file = args.lfw / "pairs.txt"
    if not pairs_file.is_file():
        raise SystemExit(f"LFW not found at {args.lfw}; pass --lfw (see its SOURCE.md).")
    pairs = read_pairs(pairs_file, args.lfw / "lfw-deepfunneled")
    images = pair_images(pairs)
    threads = os.cpu_count() or 1
    report: dict[str, Any] = {
        "machine": {
            "cpus": threads,
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "reference": "dlib-bin compute_face_descriptor",
        "ours": f"onnxruntime, {threads} intra-op threads",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=2, default=str))

    if "timing" not in args.skip:
        print(f"\nms per face ({args.timing_chips} LFW chips, {threads} threads)", flush=True)
        _, chips, _ = cut_chips(images[: args.timing_chips])
        report["ms_per_face"] = per_face_timing(chips, threads, args.rounds)
        save()
    if "e2e" not in args.skip:
        print(f"\nend to end, {args.images} LFW photos", flush=True)
        report["end_to_end"] = end_to_end(images[: args.images])
        save()
    if "lfw" not in args.skip:
        subset = images[: args.pair_images] if args.pair_images else images
        print(f"\nequivalence on {len(subset)} LFW View-2 images", flush=True)
        kept, chips, undetected = cut_chips(subset, fallback=True)
        wanted = set(subset)
        pairs_used = [p for p in pairs if p[0] in wanted and p[1] in wanted]
        result = equivalence(pairs_used, kept, chips)
        result["images_without_detection_chip_from_median_box"] = undetected
        report["equivalence"] = result
        save()
        print(
            f"  max |diff| {result['max_abs_difference']:.2e}, mean "
            f"{result['mean_abs_difference']:.2e} over {result['chips']} chips; "
            f"{result['decisions']['different']} different decisions of "
            f"{result['pairs_compared']} pairs; accuracy {result['accuracy_at_threshold']}",
            flush=True,
        )
    report["load_average_at_end"] = os.getloadavg()
    save()
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
