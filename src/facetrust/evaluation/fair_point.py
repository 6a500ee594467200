"""The shipped fair normalizer: fit it on every template, measure its in-sample threshold.

:func:`fit_shipped_normalizer` fits on all calibration templates (identity
labels only) and measures the threshold at the target FMR on normalized
distances among a seeded sample (``evaluate fairness --normalizer-output``
saves the normalizer and reports that threshold). The operating point that
names the file (``fmr-1e-3-fair``) is set by ``evaluate calibrate
--normalizer`` (:func:`facetrust.evaluation.run.run_calibration`), the protocol
of every shipped point. Held-out numbers come from
:func:`facetrust.evaluation.mitigation.study_mitigation` and
:func:`facetrust.evaluation.gap_study.study_gap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EvaluationError
from ..score_normalization import ScoreNormalizer, threshold_at_fmr
from .calibration import floor_threshold
from .mitigation import (
    NORMALIZERS,
    LabelledTemplates,
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
