"""Quality limits calibrated on LFW: what each measure refuses and what that buys in FNMR.

For each quality measure of :mod:`facetrust.quality` (inter-eye distance,
sharpness, |yaw|, |roll|), on the subject face of every measured LFW View-2
image (:mod:`lfw_faces`: the evaluation's detection and faces):

- its distribution over the images (percentiles);
- for each candidate limit: the fraction of images it refuses, the fraction
  of mated pairs it refuses (either image refused), the FNMR at the default
  operating point (``fmr-1e-3``) of the refused mated pairs and of the kept
  ones, and how many of all false non-matches it removes. A limit is worth
  its refusals when the pairs it refuses fail far more often than the rest;
- the yaw estimate's bias: a symmetric estimator gives ``yaw(mirror) =
  -yaw``, so ``(yaw + yaw of the mirrored image) / 2`` is its bias on that
  face. Measured on the full photos and on tight crops of the same faces
  (the detector box, square, scaled to 112 and 150 px), found by the
  pipeline as a user would run it, and on the 112 px crops with the
  landmarks placed in the whole crop (as for a pre-aligned crop, no detector).

Usage::

    python benchmarks/study_quality_limits.py [--faces .bench/lfw_view2_faces]
        [--crops 300] [--out benchmarks/results/quality_limits.json]

Writes JSON, a markdown table beside it and a plot (``.png``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

import lfw_faces
from facetrust import Box, FacePipeline, Settings, get_operating_point
from facetrust.images import load_image
from facetrust.quality import pose_of

REPO = Path(__file__).resolve().parent.parent
MEASURES = ("inter_eye_px", "sharpness", "abs_yaw", "abs_roll_deg")
#: Candidate limits per measure: minimums for the first two, maximums for the others.
CANDIDATES: dict[str, list[float]] = {
    "inter_eye_px": [8, 12, 16, 20, 24, 28, 32],
    "sharpness": [2, 5, 10, 20, 30, 40, 60],
    "abs_yaw": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2],
    "abs_roll_deg": [10, 15, 20, 25, 30, 35, 45],
}
IS_MINIMUM = {"inter_eye_px": True, "sharpness": True, "abs_yaw": False, "abs_roll_deg": False}


def subject_measures(faces: dict[str, Any]) -> dict[str, npt.NDArray[np.float64]]:
    """Path -> the four measures of its subject face (images with no face absent)."""
    rows = lfw_faces.subject_rows(faces)
    out = {}
    for path, row in rows.items():
        inter_eye, sharpness, yaw, roll = faces["quality"][row]
        out[path] = np.array([inter_eye, sharpness, abs(yaw), abs(roll)])
    return out


def limit_table(
    faces: dict[str, Any], pairs: list[Any], threshold: float
) -> dict[str, Any]:
    """Per measure and candidate limit: refusals and FNMR of refused and kept mated pairs."""
    measures = subject_measures(faces)
    images = lfw_faces.cached_images(faces, "none")
    vectors = {p: images[p].subject_face() for p in images}
    mated = [p for p in pairs if p.same and p.image_a in measures and p.image_b in measures]
    distance = np.array([
        float(np.linalg.norm(vectors[p.image_a].vector - vectors[p.image_b].vector))  # type: ignore[union-attr]
        for p in mated
    ])
    failed = distance > threshold
    values = np.stack(list(measures.values()))
    result: dict[str, Any] = {
        "images": len(measures),
        "mated_pairs": len(mated),
        "threshold": threshold,
        "fnmr_all": round(float(failed.mean()), 5),
        "false_non_matches": int(failed.sum()),
        "measures": {},
    }
    for index, name in enumerate(MEASURES):
        column = values[:, index]
        pair_a = np.array([measures[p.image_a][index] for p in mated])
        pair_b = np.array([measures[p.image_b][index] for p in mated])
        rows = []
        for limit in CANDIDATES[name]:
            if IS_MINIMUM[name]:
                refused_images = column < limit
                refused = (pair_a < limit) | (pair_b < limit)
            else:
                refused_images = column > limit
                refused = (pair_a > limit) | (pair_b > limit)
            kept = ~refused
            rows.append({
                "limit": limit,
                "images_refused": round(float(refused_images.mean()), 5),
                "mated_pairs_refused": round(float(refused.mean()), 5),
                "fnmr_refused": round(float(failed[refused].mean()), 4) if refused.any() else None,
                "fnmr_kept": round(float(failed[kept].mean()), 5),
                "false_non_matches_removed": int(failed[refused].sum()),
            })
        result["measures"][name] = {
            "percentiles": {
                f"p{q}": round(float(np.percentile(column, q)), 3)
                for q in (0.5, 1, 5, 50, 95, 99, 99.5)
            },
            "limits": rows,
        }
    return result


def tight_crop(pixels: npt.NDArray[np.uint8], box: Box, side: int) -> npt.NDArray[np.uint8]:
    """The square around ``box``, scaled to ``side`` px (edges replicated where it leaves)."""
    size = max(box.right - box.left, box.bottom - box.top)
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    left, top = round(cx - size / 2), round(cy - size / 2)
    pad = int(max(0, -left, -top, left + size - pixels.shape[1],
                  top + size - pixels.shape[0])) + 1
    padded = cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = padded[top + pad : top + pad + round(size), left + pad : left + pad + round(size)]
    return np.asarray(cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA),
                      dtype=np.uint8)


def yaw_bias(faces: dict[str, Any], count: int, seed: int = 18) -> dict[str, Any]:
    """Yaw of each face and of its mirror image, on full photos and on tight crops."""
    pipeline = FacePipeline(Settings(embedder_threads=1))
    rows = lfw_faces.subject_rows(faces)
    chosen = random.Random(seed).sample(sorted(rows), min(count, len(rows)))
    kinds: dict[str, list[tuple[float, float]]] = {
        "photo": [], "tight_150": [], "tight_112": [], "tight_112_whole_crop_box": []
    }
    missed = dict.fromkeys(kinds, 0)
    for path in chosen:
        pixels = load_image(path)
        box = Box(*faces["boxes"][rows[path]].tolist())
        views = {"photo": pixels, "tight_150": tight_crop(pixels, box, 150),
                 "tight_112": tight_crop(pixels, box, 112)}
        # A pre-aligned crop has no detector box: the landmarks are placed in the whole crop.
        crop = views["tight_112"]
        whole = Box(0, 0, crop.shape[1], crop.shape[0])
        kinds["tight_112_whole_crop_box"].append((
            pose_of(pipeline.landmarker.locate(crop, whole))[0],
            pose_of(pipeline.landmarker.locate(np.ascontiguousarray(crop[:, ::-1]), whole))[0],
        ))
        for kind, image in views.items():
            mirror = np.ascontiguousarray(image[:, ::-1])
            found = [pipeline.faces_in_pixels(image), pipeline.faces_in_pixels(mirror)]
            if not found[0] or not found[1]:
                missed[kind] += 1
                continue
            centre = image.shape[1] / 2
            pick = [min(f, key=lambda face: abs((face.box.left + face.box.right) / 2 - centre))
                    for f in found]
            yaw, _ = pose_of(pick[0].landmarks)
            mirrored, _ = pose_of(pick[1].landmarks)
            kinds[kind].append((yaw, mirrored))
    out: dict[str, Any] = {"faces": len(chosen)}
    for kind, values in kinds.items():
        array = np.array(values)
        bias = (array[:, 0] + array[:, 1]) / 2
        out[kind] = {
            "measured": len(values),
            "no_face_in_photo_or_mirror": missed[kind],
            "mean_yaw": round(float(array[:, 0].mean()), 4),
            "mean_abs_yaw": round(float(np.abs(array[:, 0]).mean()), 4),
            "p99_abs_yaw": round(float(np.percentile(np.abs(array[:, 0]), 99)), 4),
            "bias_mean": round(float(bias.mean()), 4),
            "bias_abs_p95": round(float(np.percentile(np.abs(bias), 95)), 4),
            "share_abs_yaw_over_0.6": round(float((np.abs(array[:, 0]) > 0.6).mean()), 4),
        }
    return out


def plot(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for axis, name in zip(axes, MEASURES, strict=True):
        rows = table["measures"][name]["limits"]
        limits = [r["limit"] for r in rows]
        axis.plot(limits, [100 * r["images_refused"] for r in rows], "o-", label="images refused %")
        axis.plot(limits, [100 * (r["fnmr_refused"] or 0) for r in rows], "s-",
                  label="FNMR of refused mated pairs %")
        axis.axhline(100 * table["fnmr_all"], color="grey", ls=":", label="FNMR of all %")
        axis.set_xlabel(("min " if IS_MINIMUM[name] else "max ") + name)
        axis.set_yscale("symlog", linthresh=1)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"LFW View 2, {table['images']} images, {table['mated_pairs']} mated pairs, "
                    f"fmr-1e-3 threshold {table['threshold']}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def markdown(table: dict[str, Any], bias: dict[str, Any]) -> str:
    lines = [f"FNMR of all {table['mated_pairs']} mated pairs at {table['threshold']}: "
             f"{100 * table['fnmr_all']:.2f}% ({table['false_non_matches']} pairs)", "",
             "| measure | limit | images refused | mated pairs refused | FNMR refused "
             "| FNMR kept | false non-matches removed |", "|" + "---|" * 7]
    for name, block in table["measures"].items():
        for r in block["limits"]:
            refused = "-" if r["fnmr_refused"] is None else f"{100 * r['fnmr_refused']:.1f}%"
            lines.append(
                f"| {name} | {'>=' if IS_MINIMUM[name] else '<='} {r['limit']:g} | "
                f"{100 * r['images_refused']:.2f}% | {100 * r['mated_pairs_refused']:.2f}% | "
                f"{refused} | {100 * r['fnmr_kept']:.2f}% | {r['false_non_matches_removed']} |"
            )
    lines += ["", "| view | faces | mean yaw | mean abs yaw | p99 abs yaw "
              "| bias (yaw + mirror yaw)/2 | p95 abs bias | abs yaw > 0.6 |", "|" + "---|" * 8]
    for kind in ("photo", "tight_150", "tight_112", "tight_112_whole_crop_box"):
        b = bias[kind]
        lines.append(f"| {kind} | {b['measured']} | {b['mean_yaw']:+.3f} | {b['mean_abs_yaw']:.3f} "
                     f"| {b['p99_abs_yaw']:.3f} | {b['bias_mean']:+.3f} | {b['bias_abs_p95']:.3f} "
                     f"| {100 * b['share_abs_yaw_over_0.6']:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=lfw_faces.DEFAULT_FACES)
    parser.add_argument("--dataset", type=Path, default=lfw_faces.DATASET)
    parser.add_argument("--crops", type=int, default=300)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks/results/quality_limits.json")
    args = parser.parse_args()
    folds = lfw_faces.measured_folds(args.faces)
    faces = lfw_faces.load_faces(args.faces, folds=folds)
    pairs = [p for p in lfw_faces.view2_pairs(args.dataset) if p.fold in folds]
    threshold = get_operating_point("fmr-1e-3", "dlib-resnet-v1").threshold
    table = limit_table(faces, pairs, threshold)
    table["folds"] = folds
    bias = yaw_bias(faces, args.crops)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"limits": table, "yaw_bias": bias}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(table, bias))
    plot(table, args.out.with_suffix(".png"))
    print(markdown(table, bias))


if __name__ == "__main__":
    main()
