"""The shipped fair operating point: fit a normalizer on every template, measure its threshold.

:func:`fit_shipped_normalizer` fits on all calibration templates (identity
labels only) and measures the threshold at the target FMR on normalized
distances; :func:`write_fair_operating_point` adds it to the operating-points
table, naming the normalizer file (``fmr-1e-3-fair``). Held-out numbers come
from :func:`facetrust.evaluation.mitigation.study_mitigation`.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvaluationError
from ..score_normalization import ScoreNormalizer, threshold_at_fmr
from .calibration import floor_threshold
from .mitigation import (
    NORMALIZERS,
    LabelledTemplates,
    MitigationStudy,
    PairSample,
    normalized_distances,
    sample_pairs,
)


def fit_shipped_normalizer(
    templates: LabelledTemplates,
    *,
    model_id: str,
    method: str = "fsn",
    clusters: int = 20,
    target_fmr: float = 1e-3,
    max_images: int = 3000,
    max_images_per_identity: int = 10,
    seed: int = 0,
) -> tuple[ScoreNormalizer, dict[str, Any]]:
    """Fit a normalizer on every template and measure its operating point.

    The normalizer needs identity labels only. The threshold is the largest
    normalized distance with FMR <= ``target_fmr`` over all cross-identity
    pairs among a seeded sample of ``max_images`` templates (the calibration
    table's rule), rounded down to 4 decimals; the FNMR is measured on mated
    pairs of all templates. Both are in-sample (the normalizer saw these
    templates): the held-out numbers come from :func:`study_mitigation`.

    Returns
    -------
    (normalizer, measurements) : the fitted normalizer and a dict with
        ``threshold``, ``measured_fmr``, ``fnmr``, ``n_non_mated``, ``n_mated``,
        ``images``, ``identities``, ``clusters``.
    """
    if method not in NORMALIZERS:
        raise EvaluationError(f"Unknown normalizer {method!r}. Pick among {sorted(NORMALIZERS)}.")
    t = templates
    normalizer = NORMALIZERS[method].fit(
        t.vectors, t.identities, model_id=model_id, clusters=clusters, target_fmr=target_fmr,
        seed=seed,
    )
    assigned = normalizer.clusters_of(t.vectors)
    rng = np.random.default_rng(seed)
    sample = np.arange(len(t.vectors))
    if len(sample) > max_images:
        sample = np.sort(rng.choice(len(sample), max_images, replace=False))
    non_mated, _ = sample_pairs(t.vectors, t.identities, sample, max_images_per_identity, seed)
    mated = mated_pairs_only(t, max_images_per_identity, seed)
    nm = normalized_distances(normalizer, assigned, non_mated)
    threshold = floor_threshold(threshold_at_fmr(nm, target_fmr), decimals=4)
    m = normalized_distances(normalizer, assigned, mated)
    return normalizer, {
        "threshold": threshold,
        "measured_fmr": float(np.mean(nm <= threshold)),
        "fnmr": float(np.mean(m > threshold)) if m.size else None,
        "n_non_mated": int(nm.size),
        "n_mated": int(m.size),
        "images": int(len(t.vectors)),
        "identities": int(len(np.unique(t.identities))),
        "clusters": clusters,
        "clusters_fitted": normalizer.clusters_fitted,
    }


def mated_pairs_only(t: LabelledTemplates, max_per_identity: int, seed: int) -> PairSample:
    """Same-identity pairs of all templates without the all-pairs matrix."""
    _, codes = np.unique(t.identities, return_inverse=True)
    members = np.argsort(codes.ravel(), kind="stable")
    bounds = np.cumsum(np.bincount(codes.ravel()))
    parts = [
        sample_pairs(t.vectors, t.identities, members[start:stop], max_per_identity, seed)[1]
        for start, stop in zip(np.concatenate([[0], bounds[:-1]]), bounds, strict=True)
        if stop - start >= 2
    ]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return PairSample(empty, empty, np.zeros(0))
    return PairSample(
        np.concatenate([p.a for p in parts]), np.concatenate([p.b for p in parts]),
        np.concatenate([p.distance for p in parts]),
    )


def write_fair_operating_point(
    path: str | os.PathLike[str],
    name: str,
    normalizer_file: str,
    measured: dict[str, Any],
    *,
    model_id: str,
    dataset: str,
    method: str,
    target_fmr: float,
    study: MitigationStudy | None = None,
    held_out_note: str | None = None,
) -> dict[str, Any]:
    """Add (or replace) the normalized operating point ``name`` in an operating-points table.

    Only the entry of that name changes; ``evaluate calibrate`` keeps it (it
    replaces only the points it measures itself). The note's held-out numbers
    come from ``study`` (the mitigation study) or, verbatim, ``held_out_note``
    (e.g. from :func:`~facetrust.evaluation.gap_study.study_gap`).
    """
    table_path = Path(path)
    table = json.loads(table_path.read_text(encoding="utf-8"))
    if held_out_note is None:
        if study is None:
            raise EvaluationError(
                "The fair operating point's note needs held-out numbers: pass the mitigation "
                "study or a held_out_note."
            )
        held_out, raw = study.method(method), study.method("raw")
        held_out_note = (
            f"Held out ({study.folds} identity folds, same overall FMR): max/min FMR ratio "
            + "; ".join(
                f"{a} {raw.ratios[a]['ratio']:.2f} -> {r['ratio']:.2f}"
                for a, r in held_out.ratios.items() if a in raw.ratios
            )
            + f", FNMR {raw.overall_fnmr:.4f} -> {held_out.overall_fnmr:.4f}."
        )
    entry = {
        "name": name,
        "model_id": model_id,
        "metric": "euclidean",
        "threshold": measured["threshold"],
        "target_fmr": target_fmr,
        "normalizer": normalizer_file,
        "description": (
            f"Largest normalized distance with FMR <= {target_fmr:g} on {dataset}, after "
            f"{method} score normalization ({measured['clusters']} clusters; see README, "
            "Reducing the demographic gap); FNMR there "
            f"{measured['fnmr']:.4f} on {measured['n_mated']} mated pairs (in-sample)."
        ),
        "source": f"measured by facetrust evaluate fairness on {dataset}",
        "dataset": dataset,
        "date": date.today().isoformat(),
        "n_non_mated": measured["n_non_mated"],
        "n_mated": measured["n_mated"],
        "measured_fmr": round(measured["measured_fmr"], 7),
        "fnmr": round(measured["fnmr"], 5),
        "note": (
            f"normalizer fitted on all {measured['images']} images ({measured['identities']} "
            "identities, no demographic labels); threshold rounded down to 4 decimals. "
            + held_out_note
        ),
    }
    points = [p for p in table.get("operating_points", []) if p.get("name") != name]
    table["operating_points"] = [*points, entry]
    table_path.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return entry
