"""dlib's CNN face detector on ONNX Runtime vs dlib's own, and which detector to use where.

1. **Speed, one core.** ms per 640 px image (longer side) for dlib's
   ``cnn_face_detection_model_v1`` (the reference), the same detector with its
   network on ONNX Runtime (:class:`facetrust.models.mmod_onnx.OnnxMmodDetector`,
   one thread) and dlib's HOG detector, all three interleaved on the same
   images in the same run, pinned to one CPU core. The boxes of both CNN
   engines are compared in the same run (count, IoU).
2. **Detection rate.** On LFW photos (250x250, identities chosen by a fixed
   seed) and on tight crops made from them (the CNN box, square, scaled to
   112 and 150 px: the ArcFace-style and dlib-chip conventions), the share of
   images in which each detector (and the HOG-then-CNN cascade) finds a face,
   run as the pipeline runs it: grayscale, then a padded and upsampled second
   pass when the first finds nothing, and its ms per image.

Usage::

    python benchmarks/bench_mmod.py [--images 12] [--rounds 3] [--lfw-images 400]
        [--out benchmarks/results/mmod.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import PIL.Image

from facetrust import Box
from facetrust.models.base import Detection, Detector
from facetrust.models.dlib_backend import CnnDetector, HogDetector
from facetrust.models.mmod_onnx import OnnxMmodDetector

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
LFW = REPO.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"
Gray = npt.NDArray[np.uint8]

#: As the pipeline's second pass: a border of this fraction of the longer side.
PAD_FRACTION = 0.25
#: The pipeline detects on images whose longer side is at most this.
MAX_SIDE = 640


def to_side(image: Gray, side: int) -> Gray:
    """``image`` scaled so its longer side is ``side`` pixels."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interpolation), dtype=np.uint8)


def timing_images(count: int) -> list[npt.NDArray[np.uint8]]:
    """RGB photos scaled to a 640 px longer side: face_recognition's samples, then LFW's."""
    paths = sorted((DATA / "face_recognition").glob("*.jpg")) + sorted(
        (DATA / "lfw").glob("*/*.jpg")
    )
    images = [to_side(np.array(PIL.Image.open(p).convert("RGB")), MAX_SIDE) for p in paths]
    return images[:count]


def iou(a: Box, b: Box) -> float:
    inner = max(0.0, min(a.right, b.right) - max(a.left, b.left)) * max(
        0.0, min(a.bottom, b.bottom) - max(a.top, b.top)
    )
    return inner / (a.area + b.area - inner)


def measure_speed(count: int, rounds: int) -> dict[str, Any]:
    """Median ms per 640 px image for each detector, rounds interleaved, on one core."""
    detectors: dict[str, Detector] = {
        "dlib_cnn": CnnDetector(),
        "onnx_cnn": OnnxMmodDetector(threads=1),
        "dlib_hog": HogDetector(),
    }
    images = timing_images(count)
    for detector in detectors.values():
        detector.detect(images[0])  # load the model outside the timing
    seconds: dict[str, list[float]] = {name: [] for name in detectors}
    found: dict[str, list[list[Detection]]] = {name: [] for name in detectors}
    for round_index in range(rounds):
        for image in images:
            for name, detector in detectors.items():
                start = time.perf_counter()
                detections = detector.detect(image)
                seconds[name].append(time.perf_counter() - start)
                if round_index == 0:
                    found[name].append(detections)
    same_count = all(
        len(a) == len(b) for a, b in zip(found["onnx_cnn"], found["dlib_cnn"], strict=True)
    )
    ious = [
        iou(a.box, b.box)
        for ours, theirs in zip(found["onnx_cnn"], found["dlib_cnn"], strict=True)
        for a, b in zip(ours, theirs, strict=False)
    ]
    ms = {name: 1e3 * statistics.median(values) for name, values in seconds.items()}
    return {
        "images": len(images),
        "rounds": rounds,
        "image_sizes": sorted({f"{i.shape[1]}x{i.shape[0]}" for i in images}),
        "ms_per_image": {name: round(value, 1) for name, value in ms.items()},
        "speedup_onnx_vs_dlib_cnn": round(ms["dlib_cnn"] / ms["onnx_cnn"], 2),
        "onnx_cnn_vs_hog": round(ms["onnx_cnn"] / ms["dlib_hog"], 2),
        "faces_found": {name: sum(len(f) for f in values) for name, values in found.items()},
        "boxes_same_count": same_count,
        "boxes_min_iou": round(min(ious), 4) if ious else None,
    }


def detect_as_pipeline(detector: Detector, gray: Gray) -> list[Detection]:
    """The pipeline's two passes: as given, then padded (and upsampled if small)."""
    found = detector.detect(gray, 0)
    if found:
        return found
    offset = round(PAD_FRACTION * max(gray.shape))
    padded = cv2.copyMakeBorder(
        gray, offset, offset, offset, offset, cv2.BORDER_CONSTANT, value=int(gray.mean())
    )
    upsample = 1 if 2 * max(gray.shape) <= MAX_SIDE else 0
    return detector.detect(np.asarray(padded, dtype=np.uint8), upsample)


def lfw_sample(count: int, seed: int = 18) -> list[Path]:
    """One photo each of ``count`` LFW identities drawn with a fixed seed."""
    identities = sorted(p for p in LFW.iterdir() if p.is_dir())
    chosen = random.Random(seed).sample(identities, min(count, len(identities)))
    return [sorted(folder.glob("*.jpg"))[0] for folder in chosen]


def tight_crop(gray: Gray, box: Box, side: int) -> Gray:
    """The square around ``box`` (its larger side, centred), scaled to ``side`` pixels."""
    size = max(box.right - box.left, box.bottom - box.top)
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    left, top = round(cx - size / 2), round(cy - size / 2)
    pad = int(max(0, -left, -top, left + size - gray.shape[1], top + size - gray.shape[0])) + 1
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = padded[top + pad : top + pad + round(size), left + pad : left + pad + round(size)]
    return np.asarray(
        cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )


def measure_detection(count: int) -> dict[str, Any]:
    """Detection rate and ms per image of each detector on LFW photos and tight crops."""
    hog, cnn = HogDetector(), OnnxMmodDetector(threads=1)
    strategies: dict[str, Callable[[Gray], list[Detection]]] = {
        "hog": lambda g: hog.detect(g, 0),
        "hog+retry": lambda g: detect_as_pipeline(hog, g),
        "cnn": lambda g: cnn.detect(g, 0),
        "cnn+retry": lambda g: detect_as_pipeline(cnn, g),
        "hog+retry, then cnn+retry": lambda g: detect_as_pipeline(hog, g)
        or detect_as_pipeline(cnn, g),
    }
    sets: dict[str, list[Gray]] = {"lfw_250px": [], "tight_112px": [], "tight_150px": []}
    for path in lfw_sample(count):
        gray = np.array(PIL.Image.open(path).convert("L"))
        sets["lfw_250px"].append(gray)
        faces = cnn.detect(gray, 1) or hog.detect(gray, 1)
        if faces:
            # the face nearest the centre: LFW photos are centred on their subject
            centre = np.array(gray.shape[::-1]) / 2
            face = min(
                faces,
                key=lambda d: float(
                    np.hypot(*(np.array([d.box.left + d.box.right, d.box.top + d.box.bottom]) / 2
                               - centre))
                ),
            )
            sets["tight_112px"].append(tight_crop(gray, face.box, 112))
            sets["tight_150px"].append(tight_crop(gray, face.box, 150))
    for strategy in strategies.values():
        strategy(sets["lfw_250px"][0])  # load the models outside the timing
    results: dict[str, Any] = {}
    for set_name, images in sets.items():
        found = dict.fromkeys(strategies, 0)
        seconds = dict.fromkeys(strategies, 0.0)
        for image in images:  # strategies interleaved, so load from others hits each alike
            for name, strategy in strategies.items():
                start = time.perf_counter()
                found[name] += bool(strategy(image))
                seconds[name] += time.perf_counter() - start
        rows = {
            name: {
                "found_rate": round(found[name] / len(images), 4),
                "missed": len(images) - found[name],
                "ms_per_image": round(1e3 * seconds[name] / len(images), 1),
            }
            for name in strategies
        }
        results[set_name] = {"images": len(images), "detectors": rows}
    return results


def print_tables(speed: dict[str, Any], detection: dict[str, Any]) -> None:
    print(f"Speed, one core, {speed['images']} images of {', '.join(speed['image_sizes'])}:")
    for name, value in speed["ms_per_image"].items():
        print(f"  {name:10s} {value:9.1f} ms/image")
    print(
        f"  ONNX CNN is {speed['speedup_onnx_vs_dlib_cnn']}x faster than dlib's CNN "
        f"(same count: {speed['boxes_same_count']}, min IoU {speed['boxes_min_iou']}); "
        f"{speed['onnx_cnn_vs_hog']}x HOG's time"
    )
    for set_name, block in detection.items():
        print(f"\n{set_name} ({block['images']} images): found rate, ms/image (one core)")
        for name, row in block["detectors"].items():
            print(
                f"  {name:28s} {100 * row['found_rate']:6.2f}%  missed {row['missed']:4d}  "
                f"{row['ms_per_image']:7.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="photos timed at 640 px")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lfw-images", type=int, default=400, help="LFW identities, one photo")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/mmod.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    speed = measure_speed(args.images, args.rounds)
    detection = measure_detection(args.lfw_images) if args.lfw_images else {}
    print_tables(speed, detection)
    out = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1},
        "speed_640px": speed,
        "detection": detection,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
