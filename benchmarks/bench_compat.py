"""face_recognition vs facetrust.compat.face_recognition: speed and equality, one run.

Both run in this one process, the way face_recognition's README runs it:
``face_locations(image)`` (HOG, upsampled once), then
``face_encodings(image, locations)``; and ``face_encodings(image)`` alone.
Same images, same machine, same run, the reference's number beside ours.
Each image is timed with the reference and with the shim back to back, so
load from other processes hits both alike. Boxes must be identical (the
script fails if not); descriptors are compared by largest absolute difference.

Images: face_recognition's own test photos (``tests/data/face_recognition``,
large news photos) and LFW photos (250x250; every ``len/300``-th of the
sorted list). The CNN detector is timed on a few LFW photos. With ``--suite``
face_recognition's own test file is run by pytest twice, unchanged against
face_recognition and with its imports pointed at the shim, and both wall
times are printed.

Usage::

    python benchmarks/bench_compat.py [--lfw ../shared/datasets/lfw] [--images 300]
        [--cnn-images 4] [--suite PATH/tests/test_face_recognition.py]
        [--out benchmarks/results/compat.json]

Needs ``pip install --no-deps face_recognition`` (its dlib dependency would
compile; dlib-bin provides ``dlib``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "data" / "face_recognition"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def lfw_sample(lfw: Path, count: int) -> list[Path]:
    """``count`` LFW photos spread evenly over the sorted list of all of them."""
    paths = sorted((lfw / "lfw-deepfunneled").glob("*/*.jpg"))
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def clock(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds ``fn(*args, **kwargs)`` took, and its result."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def compare(label: str, paths: Sequence[Path], reference: Any, shim: Any) -> dict[str, Any]:
    """Per-image timings of both libraries, box equality and descriptor differences."""
    times: dict[str, dict[str, list[float]]] = {
        name: {"locations": [], "encodings_known": [], "encodings_alone": []}
        for name in ("face_recognition", "shim")
    }
    largest_difference = 0.0
    faces = 0
    for path in paths:
        image = reference.load_image_file(str(path))
        results = {}
        for name, module in (("face_recognition", reference), ("shim", shim)):
            t_locations, boxes = clock(module.face_locations, image)
            t_known, known = clock(module.face_encodings, image, boxes)
            t_alone, alone = clock(module.face_encodings, image)
            times[name]["locations"].append(t_locations)
            times[name]["encodings_known"].append(t_known)
            times[name]["encodings_alone"].append(t_alone)
            results[name] = (boxes, known, alone)
        (ref_boxes, ref_known, ref_alone), (our_boxes, our_known, our_alone) = (
            results["face_recognition"],
            results["shim"],
        )
        if ref_boxes != our_boxes:
            raise SystemExit(f"{path}: boxes differ: {ref_boxes} vs {our_boxes}")
        if len(ref_known) != len(our_known) or len(ref_alone) != len(our_alone):
            raise SystemExit(f"{path}: different numbers of encodings")
        for theirs, ours in zip(ref_known + ref_alone, our_known + our_alone, strict=True):
            largest_difference = max(largest_difference, float(np.abs(theirs - ours).max()))
        faces += len(ref_boxes)
    summary: dict[str, Any] = {"images": len(paths), "faces": faces}
    for name, columns in times.items():
        summary[name] = {
            f"{column}_ms": round(1e3 * float(np.mean(values)), 2)
            for column, values in columns.items()
        }
        summary[name]["locations_plus_encodings_ms"] = round(
            summary[name]["locations_ms"] + summary[name]["encodings_known_ms"], 2
        )
    ref, ours = summary["face_recognition"], summary["shim"]
    summary["speedup"] = {
        key.removesuffix("_ms"): round(ref[key] / ours[key], 2) for key in ref if ours[key] > 0
    }
    summary["max_abs_descriptor_difference"] = largest_difference
    summary["identical_boxes"] = True
    print_table(label, summary)
    return summary


def print_table(label: str, summary: dict[str, Any]) -> None:
    ref, ours, speedup = summary["face_recognition"], summary["shim"], summary["speedup"]
    print(f"\n{label}: {summary['images']} images, {summary['faces']} faces (ms per image)")
    print(f"{'call':38} {'face_recognition':>17} {'shim':>9} {'ratio':>7}")
    rows = [
        ("face_locations", "locations"),
        ("face_encodings(image, known locations)", "encodings_known"),
        ("face_locations + face_encodings", "locations_plus_encodings"),
        ("face_encodings(image)", "encodings_alone"),
    ]
    for title, key in rows:
        print(
            f"{title:38} {ref[key + '_ms']:>17.1f} {ours[key + '_ms']:>9.1f} {speedup[key]:>6.2f}x"
        )
    print(
        f"identical boxes: yes; largest descriptor difference: "
        f"{summary['max_abs_descriptor_difference']:.2e}"
    )


def compare_cnn(paths: Sequence[Path], reference: Any, shim: Any) -> dict[str, Any]:
    """The CNN detector, upsampled once, on a few photos: time and box equality."""
    seconds = {"face_recognition": 0.0, "shim": 0.0}
    for path in paths:
        image = reference.load_image_file(str(path))
        t_ref, theirs = clock(reference.face_locations, image, 1, model="cnn")
        t_ours, ours = clock(shim.face_locations, image, 1, model="cnn")
        if theirs != ours:
            raise SystemExit(f"{path}: CNN boxes differ: {theirs} vs {ours}")
        seconds["face_recognition"] += t_ref
        seconds["shim"] += t_ours
    summary = {
        "images": len(paths),
        "face_recognition_ms": round(1e3 * seconds["face_recognition"] / len(paths), 1),
        "shim_ms": round(1e3 * seconds["shim"] / len(paths), 1),
        "identical_boxes": True,
    }
    summary["speedup"] = round(summary["face_recognition_ms"] / summary["shim_ms"], 2)
    print(
        f"\nCNN face_locations (upsample 1), {len(paths)} LFW images: face_recognition "
        f"{summary['face_recognition_ms']:.0f} ms, shim {summary['shim_ms']:.0f} ms per image "
        f"({summary['speedup']:.2f}x), identical boxes"
    )
    return summary


def time_suite(test_file: Path) -> dict[str, Any]:
    """Wall time of face_recognition's suite against face_recognition and against the shim."""
    sys.path.insert(0, str(REPO / "tests" / "compat"))
    from test_upstream_suite import point_imports_at_shim

    results: dict[str, Any] = {}
    for target in ("face_recognition", "shim"):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "test_images").symlink_to(test_file.parent / "test_images")
            copy = Path(folder) / "test_face_recognition.py"
            source = test_file.read_text()
            copy.write_text(point_imports_at_shim(source) if target == "shim" else source)
            seconds, run = clock(
                lambda c=copy, f=folder: subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(c)],
                    cwd=f,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                )
            )
            outcome = re.findall(r"\d+ (?:passed|failed|error)\w*", run.stdout)
            results[target] = {"seconds": round(seconds, 1), "outcome": ", ".join(outcome)}
            print(
                f"suite against {target}: {seconds:.1f} s ({', '.join(outcome)}), "
                f"load {load_average()}"
            )
    results["speedup"] = round(
        results["face_recognition"]["seconds"] / results["shim"]["seconds"], 2
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--cnn-images", type=int, default=4)
    parser.add_argument(
        "--suite", type=Path, help="face_recognition's tests/test_face_recognition.py"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    import_reference, reference = clock(lambda: __import__("face_recognition"))
    import_shim, shim = clock(
        lambda: __import__("facetrust.compat.face_recognition", fromlist=["api"])
    )
    print(
        f"import: face_recognition {import_reference:.2f} s (loads every model), "
        f"shim {import_shim:.2f} s (loads models on first use)"
    )
    warm = reference.load_image_file(str(EXAMPLES / "obama.jpg"))
    first_call, _ = clock(lambda: shim.face_encodings(warm))
    print(
        f"shim's first face_encodings call (loads HOG, 5-point and ONNX models): {first_call:.2f} s"
    )

    lfw = lfw_sample(args.lfw, args.images)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "import_seconds": {
            "face_recognition": round(import_reference, 2),
            "shim": round(import_shim, 2),
        },
        "examples": compare(
            "face_recognition's test photos", sorted(EXAMPLES.glob("*.[jp][pn]g")), reference, shim
        ),
        "lfw": compare(f"LFW 250x250, {len(lfw)} photos spread over all", lfw, reference, shim),
    }
    if args.cnn_images:
        report["cnn"] = compare_cnn(lfw[: args.cnn_images], reference, shim)
    if args.suite:
        report["suite"] = time_suite(args.suite)
    report["load_average_after"] = load_average()
    print(f"\nload average after: {report['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
