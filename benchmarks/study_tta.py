"""Test-time augmentation (none, mirror, jitter): LFW View-2 accuracy, cost per face, groups.

For each augmentation of :mod:`facetrust.models.augmentation`, on the same
detected faces (:mod:`lfw_faces`: the evaluation's detection, HOG then the
CNN detector on images HOG misses, the face nearest the centre):

- LFW View 2 accuracy with the 10-fold protocol of ``facetrust evaluate
  pairs`` (:func:`facetrust.evaluation.protocol.evaluate_pairs`), failures
  to acquire counted as errors;
- the calibration of ``facetrust evaluate calibrate``
  (:func:`~facetrust.evaluation.calibration.calibrate`: all cross-identity
  pairs among 3,000 seeded images, the View-2 mated pairs), so each model id
  gets its own ``fmr-1e-2``/``fmr-1e-3``/``-all-groups`` thresholds (for
  comparison only: the shipped ``+mirror`` and ``+jitter`` points are written by
  ``FACETRUST_AUGMENTATION=<augmentation> facetrust evaluate calibrate``);
- FNMR, FMR and FTA per demographic group at its own ``fmr-1e-3``
  (:func:`~facetrust.evaluation.demographics.audit_groups`);
- network cost per face against the plain embedding, measured in the same
  run on the same chips, one thread, rounds interleaved; and the whole cost
  per face (detection, landmarks, alignment, embedding) for each.

Usage::

    python benchmarks/lfw_faces.py --views 6 --folds 0 1      # jitter's views too
    python benchmarks/lfw_faces.py --views 2 --folds 2 3 4 5 6 7 8 9
    python benchmarks/study_tta.py [--out benchmarks/results/tta.json]

none and mirror are compared on every measured fold; jitter (6 passes per
face) on the folds measured with 6 views, beside none and mirror on the
same folds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lfw_faces
from facetrust import FacePipeline, Settings
from facetrust.evaluation.calibration import calibrate, impostor_distances
from facetrust.evaluation.demographics import audit_groups, load_labels
from facetrust.evaluation.pairs import Pair
from facetrust.evaluation.protocol import evaluate_pairs
from facetrust.images import load_image
from facetrust.models.augmentation import AugmentedEmbedder, augmented_model_id
from facetrust.models.onnx_backend import OnnxResnetEmbedder

REPO = Path(__file__).resolve().parent.parent
DATASET_NAME = (
    "LFW deep-funneled View-2 images (pairs; labels: Afifi & Abdelhamed 2017 gender per "
    "image, usc-sail lfw_race_dict per identity)"
)


def evaluate(
    faces: dict[str, Any], pairs: list[Pair], augmentation: str, labels: list[Any]
) -> dict[str, Any]:
    """Accuracy, calibration and group rates of one augmentation on measured faces."""
    images = lfw_faces.cached_images(faces, augmentation)
    evaluation = evaluate_pairs(pairs, images)
    impostor, info = impostor_distances(images, max_images=3000, seed=0)
    mated = evaluation.distances[evaluation.labels]
    model_id = augmented_model_id("dlib-resnet-v1", augmentation)
    overall = calibrate(impostor, mated, model_id=model_id, dataset=DATASET_NAME,
                        impostor_set=info)
    point = next(r for r in overall.rows if r.name == "fmr-1e-3")
    threshold = float(point.threshold or 0.0)
    labelled = {p: i for p, i in images.items() if any(a.group_of(p) for a in labels)}
    audit = audit_groups(labelled, labels, threshold, operating_point="fmr-1e-3", seed=0,
                         replicates=50)
    table = calibrate(impostor, mated, model_id=model_id, dataset=DATASET_NAME,
                      impostor_set=info, group_non_mated=audit.group_non_mated)
    summary = evaluation.summary()
    return {
        "model_id": model_id,
        "pairs": len(pairs),
        "accuracy": round(summary["mean_accuracy"], 5),
        "accuracy_std": round(summary["std_accuracy"], 5),
        "eer": round(summary["eer"], 5),
        "fta_pairs": summary["failure_to_acquire"]["pairs"],
        "fta_images": summary["failure_to_acquire"]["images"],
        "calibration": [row.to_dict() for row in table.rows],
        "groups": [
            {k: g.to_dict()[k] for k in ("attribute", "group", "n_images", "fta_rate",
                                           "n_mated", "fnmr", "n_non_mated", "fmr", "status")}
            for g in audit.groups
        ],
        "table": table,
    }


def measure_cost(paths: list[str], rounds: int) -> dict[str, Any]:
    """ms per face: network alone and whole pipeline, each augmentation, one thread."""
    base = OnnxResnetEmbedder(threads=1)
    pipeline = FacePipeline(Settings(embedder_threads=1), embedder=base)
    pixels = [load_image(p) for p in paths]
    faces = [face for image in pixels for face in pipeline.faces_in_pixels(image)[:1]]
    chips = [face.chip for face in faces if face.chip is not None]
    embedders = {a: AugmentedEmbedder(base, a) for a in ("none", "mirror", "jitter")}
    base.embed(chips[:1])
    network: dict[str, list[float]] = {a: [] for a in embedders}
    for _ in range(rounds):
        for augmentation, embedder in embedders.items():
            for chip in chips:  # one face per call, as verify and the gate embed
                start = time.perf_counter()
                embedder.embed([chip])
                network[augmentation].append(time.perf_counter() - start)
    detect: list[float] = []
    for image in pixels:
        start = time.perf_counter()
        pipeline.faces_in_pixels(image)
        detect.append(time.perf_counter() - start)
    detect_ms = 1e3 * statistics.median(detect)
    net_ms = {a: 1e3 * statistics.median(v) for a, v in network.items()}
    return {
        "faces": len(chips),
        "rounds": rounds,
        "network_ms_per_face": {a: round(v, 2) for a, v in net_ms.items()},
        "network_cost_ratio": {a: round(v / net_ms["none"], 2) for a, v in net_ms.items()},
        "detect_align_ms_per_image": round(detect_ms, 2),
        "pipeline_cost_ratio": {
            a: round((detect_ms + v) / (detect_ms + net_ms["none"]), 2) for a, v in net_ms.items()
        },
    }


def markdown(results: dict[str, Any]) -> str:
    lines = ["| set | augmentation | pairs | accuracy | FTA pairs | fmr-1e-3 threshold "
             "| FNMR at fmr-1e-3 | network cost | pipeline cost |", "|" + "---|" * 9]
    cost = results["cost"]
    for set_name, block in results["sets"].items():
        for augmentation, row in block.items():
            point = next(r for r in row["calibration"] if r["name"] == "fmr-1e-3")
            lines.append(
                f"| {set_name} | {augmentation} | {row['pairs']} | "
                f"{100 * row['accuracy']:.2f}% +- {100 * row['accuracy_std']:.2f} | "
                f"{row['fta_pairs']} | {point['threshold']:.4f} | {point['fnmr']:.4f} | "
                f"{cost['network_cost_ratio'][augmentation]}x | "
                f"{cost['pipeline_cost_ratio'][augmentation]}x |"
            )
    lines += ["", "| set | augmentation | group | images | FTA | FNMR | FMR |", "|" + "---|" * 7]
    for set_name, block in results["sets"].items():
        for augmentation, row in block.items():
            for g in row["groups"]:
                if g["status"] != "ok":
                    continue
                lines.append(
                    f"| {set_name} | {augmentation} | {g['attribute']}={g['group']} | "
                    f"{g['n_images']} | {100 * g['fta_rate']:.2f}% | "
                    f"{g['fnmr']:.4f} | {g['fmr']:.5f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=lfw_faces.DEFAULT_FACES,
                        help="folder of per-fold measurements (benchmarks/lfw_faces.py)")
    parser.add_argument("--dataset", type=Path, default=lfw_faces.DATASET)
    parser.add_argument("--cost-images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tta.json")
    args = parser.parse_args()
    labels = load_labels(args.dataset / "labels")
    pairs = lfw_faces.view2_pairs(args.dataset)
    results: dict[str, Any] = {"sets": {}}
    for views, augmentations in ((2, ("none", "mirror")), (6, ("none", "mirror", "jitter"))):
        folds = lfw_faces.measured_folds(args.faces, views)
        if len(folds) < 2:
            continue
        faces = lfw_faces.load_faces(args.faces, views=views, folds=folds)
        subset = [p for p in pairs if p.fold in folds]
        block = {}
        for augmentation in augmentations:
            row = evaluate(faces, subset, augmentation, labels)
            row.pop("table")
            block[augmentation] = row
            print(f"folds {folds}: {augmentation} accuracy {row['accuracy']:.4f}", flush=True)
        results["sets"][f"folds_{''.join(map(str, folds))}"] = block
    faces = lfw_faces.load_faces(args.faces, views=2)
    cost_paths = [str(p) for p in faces["paths"][: args.cost_images]]
    results["cost"] = measure_cost(cost_paths, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
