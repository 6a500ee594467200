"""Fit the shipped score normalizer on all of LFW and write its ``fmr-1e-3-fair`` operating point.

Usage::

    python benchmarks/ship_fair_normalizer.py [DATASET] --method pairwise-fsn --clusters 20 \\
        --gap .bench/fairness-gap/fairness_gap.json

The normalizer is fitted on every image (identity labels only, no demographic
label) and saved as ``src/facetrust/data/normalizer-<method>-lfw.json``; the
operating point's threshold is the largest normalized distance with FMR <= 1e-3
(in-sample, the calibration table's rule), and its note quotes the held-out
numbers of ``bench_fairness_gap.py`` (``--gap``) for that method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facetrust.evaluation.fair_point import fit_shipped_normalizer, write_fair_operating_point
from facetrust.evaluation.run import load_templates
from facetrust.models.dlib_backend import DLIB_RESNET_MODEL_ID

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "facetrust" / "data"
DATASET_NAME = (
    "LFW deep-funneled (all 13,233 images, 5,749 identities; labels for evaluation only: "
    "Afifi & Abdelhamed 2017 gender per image, usc-sail lfw_race_dict per identity)"
)


def _held_out_note(gap: dict[str, Any], name: str) -> str:
    parts = []
    for study in gap["studies"]:
        method = next(m for m in study["methods"] if m["method"] == name)
        raw = next(m for m in study["methods"] if m["method"] == "raw")
        joint, raw_joint = method["ratios"]["all"], raw["ratios"]["all"]
        parts.append(
            f"seed {study['seed']} {raw_joint['ratio']:.1f} -> {joint['ratio']:.1f} "
            f"({joint['reduction']:.1f}x [{joint['reduction_ci95'][0]:.1f}, "
            f"{joint['reduction_ci95'][1]:.1f}]), FNMR {raw['overall_fnmr']:.4f} -> "
            f"{method['overall_fnmr']:.4f}"
        )
    return ("Held out (bench_fairness_gap.py: 5 identity folds, every pair scored out of fold, "
            "same overall FMR 1e-3): joint max/min FMR ratio over groups with >= 50 "
            "identities, " + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path,
                        default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--method", default="pairwise-fsn")
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--gap", type=Path,
                        default=REPO / ".bench" / "fairness-gap" / "fairness_gap.json")
    parser.add_argument("--name", default=None,
                        help="Method name in the gap JSON (default <method>-k<clusters>).")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images_dir = args.dataset / "lfw-deepfunneled"
    if not images_dir.is_dir():
        print(f"skipped: {images_dir} not found", file=sys.stderr)
        return 0
    gap = json.loads(args.gap.read_text())
    note = _held_out_note(gap, args.name or f"{args.method}-k{args.clusters}")
    templates, _ = load_templates(images_dir, [args.dataset / "labels"], cache=args.cache)
    normalizer, measured = fit_shipped_normalizer(
        templates, model_id=DLIB_RESNET_MODEL_ID, method=args.method,
        clusters=args.clusters, seed=args.seed,
    )
    file_name = f"normalizer-{args.method}-lfw.json"
    normalizer.save(DATA / file_name)
    entry = write_fair_operating_point(
        DATA / "operating_points.json", "fmr-1e-3-fair", file_name, measured,
        model_id=normalizer.model_id, dataset=DATASET_NAME, method=args.method,
        target_fmr=1e-3, held_out_note=note,
    )
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
