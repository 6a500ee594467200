"""End-to-end throughput, decision agreement and memory: facetrust vs face_recognition.

Both use the same dlib models (HOG detector, 5-point landmarks, ResNet
descriptor). face_recognition runs the way its users run it (one process,
``face_locations`` at upsample 1, then ``face_encodings``); facetrust runs
``embed_many`` with one worker per core. Same images, same machine, same run.

Usage::

    python benchmarks/bench_pipeline.py [--lfw ../shared/datasets/lfw] [--images 500]
        [--large 200] [--pairs 1200] [--out benchmarks/results/pipeline.json]

Needs ``pip install -e '.[bench]'`` and ``pip install --no-deps face_recognition``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

import facetrust

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = facetrust.get_operating_point("dlib-default").threshold


class PeakRss:
    """Samples the resident memory of this process and its children while running."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_total = 0
        self.peak_parent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                parent = me.memory_info().rss
                children = sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_parent = max(self.peak_parent, parent)
            self.peak_total = max(self.peak_total, parent + children)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_pairs(pairs_file: Path, images: Path, limit: int) -> list[tuple[Path, Path, bool]]:
    """The first ``limit`` pairs of LFW View 2 (folds in file order)."""

    def path(name: str, number: str) -> Path:
        return images / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for line in pairs_file.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
            pairs.append((path(parts[0], parts[1]), path(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append((path(parts[0], parts[1]), path(parts[2], parts[3]), False))
        if len(pairs) == limit:
            break
    return pairs


def centre_index(boxes: Sequence[tuple[float, float, float, float]], size: tuple[int, int]) -> int:
    """Index of the box whose centre is nearest the image centre (LFW's subject)."""
    h, w = size
    distances = [
        ((x0 + x1) / 2 - w / 2) ** 2 + ((y0 + y1) / 2 - h / 2) ** 2 for x0, y0, x1, y1 in boxes
    ]
    return int(np.argmin(distances))


def run_face_recognition(paths: Sequence[Path]) -> tuple[list[np.ndarray | None], int]:
    import face_recognition

    vectors: list[np.ndarray | None] = []
    faces = 0
    for path in paths:
        image = face_recognition.load_image_file(str(path))
        locations = face_recognition.face_locations(image)  # HOG, upsample 1
        encodings = face_recognition.face_encodings(image, locations)
        faces += len(encodings)
        if not encodings:
            vectors.append(None)
            continue
        boxes = [(left, top, right, bottom) for top, right, bottom, left in locations]
        vectors.append(np.asarray(encodings[centre_index(boxes, image.shape[:2])]))
    return vectors, faces


def run_facetrust(
    paths: Sequence[Path], workers: int, embedder: str = "auto"
) -> tuple[list[np.ndarray | None], int]:
    vectors: list[np.ndarray | None] = []
    faces = 0
    settings = facetrust.Settings.from_env(embedder=embedder)
    for path, result in zip(
        paths, facetrust.embed_many(paths, settings, workers=workers, progress=True), strict=True
    ):
        faces += len(result.faces)
        if not result.faces:
            vectors.append(None)
            continue
        with Image.open(path) as image:
            size = (image.height, image.width)
        boxes = [
            (f.face.box.left, f.face.box.top, f.face.box.right, f.face.box.bottom)
            for f in result.faces
        ]
        vectors.append(result.faces[centre_index(boxes, size)].embedding.vector)
    return vectors, faces


def timed(fn: Callable[[], tuple[list[np.ndarray | None], int]], n: int) -> dict[str, Any]:
    with PeakRss() as memory:
        start = time.perf_counter()
        vectors, faces = fn()
        seconds = time.perf_counter() - start
    return {
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 2),
        "faces_per_s": round(faces / seconds, 2),
        "faces": faces,
        "no_face": sum(v is None for v in vectors),
        "peak_rss_mb_total": round(memory.peak_total / 2**20, 1),
        "peak_rss_mb_parent": round(memory.peak_parent / 2**20, 1),
        "_vectors": vectors,
    }


def make_large(paths: Sequence[Path], folder: Path, side: int) -> list[Path]:
    """Real LFW photos upscaled to ``side`` x ``side`` (about 1.2 MP at 1100)."""
    out = []
    for path in paths:
        target = folder / path.name
        Image.open(path).resize((side, side), Image.Resampling.BICUBIC).save(target, quality=92)
        out.append(target)
    return out


def compare_throughput(label: str, paths: Sequence[Path], workers: int) -> dict[str, Any]:
    print(f"\n[{label}] {len(paths)} images: face_recognition (1 process) ...", flush=True)
    reference = timed(lambda: run_face_recognition(paths), len(paths))
    print(f"[{label}] facetrust, dlib backend ({workers} workers) ...", flush=True)
    ours_dlib = timed(lambda: run_facetrust(paths, workers, "dlib"), len(paths))
    print(
        f"[{label}] facetrust, default (ONNX Runtime) backend ({workers} workers) ...", flush=True
    )
    ours = timed(lambda: run_facetrust(paths, workers), len(paths))
    return {"face_recognition": reference, "facetrust_dlib": ours_dlib, "facetrust": ours}


def agreement(
    pairs: Sequence[tuple[Path, Path, bool]],
    ours: dict[Path, np.ndarray | None],
    theirs: dict[Path, np.ndarray | None],
) -> dict[str, Any]:
    agree = disagree = skipped = 0
    max_gap = 0.0
    cases = []
    for a, b, same in pairs:
        va, vb, ra, rb = ours[a], ours[b], theirs[a], theirs[b]
        if va is None or vb is None or ra is None or rb is None:
            skipped += 1
            continue
        d_ours = float(np.linalg.norm(va - vb))
        d_ref = float(np.linalg.norm(ra - rb))
        max_gap = max(max_gap, abs(d_ours - d_ref))
        if (d_ours <= THRESHOLD) == (d_ref <= THRESHOLD):
            agree += 1
        else:
            disagree += 1
            cases.append(
                {"a": a.name, "b": b.name, "same": same, "ours": d_ours, "reference": d_ref}
            )
    both = agree + disagree
    return {
        "pairs": len(pairs),
        "compared": both,
        "agree": agree,
        "disagree": disagree,
        "agreement": round(agree / both, 5) if both else None,
        "skipped_no_face": skipped,
        "max_abs_distance_gap": round(max_gap, 4),
        "disagreements": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--large", type=int, default=200, help="upscaled large photos")
    parser.add_argument("--large-side", type=int, default=1100)
    parser.add_argument("--pairs", type=int, default=1200, help="View-2 pairs for agreement")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/pipeline.json")
    args = parser.parse_args()
    images = args.lfw / "lfw-deepfunneled"
    if not images.is_dir():
        raise SystemExit(f"LFW not found at {args.lfw}; pass --lfw")

    pairs = read_pairs(args.lfw / "pairs.txt", images, args.pairs)
    pair_images = sorted({p for a, b, _ in pairs for p in (a, b)})
    rng = np.random.default_rng(0)
    small = [pair_images[i] for i in sorted(rng.choice(len(pair_images), args.images, False))]

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "threshold": THRESHOLD,
    }
    results["lfw_250px"] = compare_throughput("LFW 250x250", small, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        large = make_large(small[: args.large], Path(tmp), args.large_side)
        results["large"] = compare_throughput(
            f"{args.large_side}x{args.large_side}", large, args.workers
        )

    # Agreement: every image of the chosen pairs, embedded by both.
    rest = [p for p in pair_images if p not in set(small)]
    print(f"\n[agreement] embedding {len(rest)} more images with both ...", flush=True)
    theirs_rest, _ = run_face_recognition(rest)
    ours_rest, _ = run_facetrust(rest, args.workers)
    ours = dict(zip(small, results["lfw_250px"]["facetrust"]["_vectors"], strict=True))
    theirs = dict(zip(small, results["lfw_250px"]["face_recognition"]["_vectors"], strict=True))
    ours.update(zip(rest, ours_rest, strict=True))
    theirs.update(zip(rest, theirs_rest, strict=True))
    results["agreement"] = agreement(pairs, ours, theirs)
    results["failure_to_acquire"] = {
        "images": len(pair_images),
        "facetrust": sum(v is None for v in ours.values()),
        "face_recognition": sum(v is None for v in theirs.values()),
    }

    for key in ("lfw_250px", "large"):
        for impl in ("face_recognition", "facetrust_dlib", "facetrust"):
            results[key][impl].pop("_vectors")
        reference = results[key]["face_recognition"]["images_per_s"]
        for impl in ("facetrust_dlib", "facetrust"):
            results[key][f"speedup_{impl}"] = round(
                results[key][impl]["images_per_s"] / reference, 2
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print(
        "\n| photos | face_recognition img/s | facetrust dlib img/s (ratio) "
        "| facetrust ONNX img/s (ratio) | faces/s (dlib / ONNX) "
        "| peak RSS face_recognition / facetrust dlib / ONNX (all processes) |"
    )
    print("|---|---|---|---|---|---|")
    for key, label in (("lfw_250px", "LFW 250x250"), ("large", f"{args.large_side}^2 upscaled")):
        r = results[key]
        fr, fd, fo = r["face_recognition"], r["facetrust_dlib"], r["facetrust"]
        print(
            f"| {label} ({fo['images']}) | {fr['images_per_s']} "
            f"| {fd['images_per_s']} ({r['speedup_facetrust_dlib']}x) "
            f"| {fo['images_per_s']} ({r['speedup_facetrust']}x) "
            f"| {fd['faces_per_s']} / {fo['faces_per_s']} "
            f"| {fr['peak_rss_mb_total']} / {fd['peak_rss_mb_total']} / "
            f"{fo['peak_rss_mb_total']} MB |"
        )
    a = results["agreement"]
    print(
        f"\nagreement at {THRESHOLD}: {a['agree']}/{a['compared']} pairs = {a['agreement']}; "
        f"{a['disagree']} disagreements; {a['skipped_no_face']} pairs skipped (no face); "
        f"max |distance gap| {a['max_abs_distance_gap']}"
    )
    print(f"failure to acquire: {results['failure_to_acquire']}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
