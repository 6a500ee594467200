"""Does unsupervised score normalization shrink the demographic gap? Measured honestly.

Protocol (identity-disjoint cross-fitting):

1. Identities are split into ``folds`` seeded folds; every image of an
   identity lies in one fold.
2. For each held-out fold, each normalizer (:class:`FairScoreNormalizer`,
   :class:`ClusterZNormalizer`) is fitted on the *other* folds' templates
   only (identity labels, never demographic ones). Its number of clusters
   is chosen among ``clusters`` on the calibration folds alone: fitted on
   all but one calibration fold and scored on that one (smallest max/min
   FMR ratio, with overall FNMR rising at most ``max_fnmr_increase``).
3. The held-out fold's pairs are scored raw and normalized: all
   cross-identity pairs (non-mated) and same-identity pairs (mated, at most
   ``max_images_per_identity`` images per identity).
4. Pooled over folds, each method gets ONE threshold at ``target_fmr`` over
   all held-out non-mated pairs, so every method is compared at the same
   overall FMR. Per group (non-mated pairs drawn within the group, as in
   :mod:`.demographics`): FMR and FNMR with identity-bootstrap 95% intervals,
   and per attribute the max/min FMR ratio among groups with at least
   ``min_identities`` identities, with its own interval from the same
   identity draws.

A group with no false match is reported as FMR ``<= 3/N`` (rule of three)
and, in a ratio, counted at that bound: the ratio is then a lower bound.
Distances stay distances (lower is more similar, match when ``<=``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError
from ..score_normalization import (
    ClusterZNormalizer,
    FairScoreNormalizer,
    PairwiseFairScoreNormalizer,
    ScoreNormalizer,
    threshold_at_fmr,
)
from .cache import CachedImage
from .demographics import AttributeLabels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Normalizers compared, by the name used in reports.
NORMALIZERS: dict[
    str, type[FairScoreNormalizer] | type[ClusterZNormalizer] | type[PairwiseFairScoreNormalizer]
] = {
    "fsn": FairScoreNormalizer,
    "cluster-z": ClusterZNormalizer,
    "pairwise-fsn": PairwiseFairScoreNormalizer,
}
#: The un-normalized baseline's name in reports.
RAW = "raw"


@dataclass(frozen=True)
class LabelledTemplates:
    """Templates with an identity each and optional ground-truth groups.

    Attributes
    ----------
    vectors : ndarray of shape (n, dim)
    identities : ndarray of shape (n,)
    groups : dict
        Attribute -> array of shape (n,) of group names, ``""`` where unlabelled.
        Labels come from the dataset's files, never from the faces.
    """

    vectors: FloatArray
    identities: npt.NDArray[Any]
    groups: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.vectors)
        if np.ndim(self.vectors) != 2 or len(self.identities) != n or any(
            len(g) != n for g in self.groups.values()
        ):
            raise EvaluationError(
                "Expected vectors of shape (n, dim) with n identities and n labels per "
                f"attribute. Got {np.shape(self.vectors)}, {len(self.identities)} identities."
            )


def templates_from_images(
    images: Mapping[str, CachedImage], labels: Sequence[AttributeLabels]
) -> LabelledTemplates:
    """The subject face of every image with one (LFW layout ``<identity>/<image>``).

    Unlabelled images are kept (fitting needs no demographic label); their
    group is ``""``.
    """
    paths = sorted(p for p, image in images.items() if image.subject_face() is not None)
    if not paths:
        raise EvaluationError("None of the images has a face: nothing to evaluate.")
    vectors = np.stack(
        [np.asarray(images[p].subject_face().vector, np.float64) for p in paths]  # type: ignore[union-attr]
    )
    identities = np.array([Path(p).parent.name for p in paths])
    groups = {
        a.attribute: np.array([a.group_of(p) or "" for p in paths], dtype=object)
        for a in labels
    }
    return LabelledTemplates(vectors, identities, groups)


def identity_folds(identities: npt.ArrayLike, folds: int, *, seed: int = 0) -> IntArray:
    """Fold number (0..folds-1) of each row; all rows of an identity share one fold."""
    names, codes = np.unique(np.asarray(identities), return_inverse=True)
    if not 2 <= folds <= len(names):
        raise EvaluationError(
            f"The 'folds' parameter must be in [2, {len(names)}] (number of identities). "
            f"Got {folds} instead."
        )
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of_identity = np.empty(len(names), dtype=np.int64)
    fold_of_identity[order] = np.arange(len(names)) % folds
    result: IntArray = fold_of_identity[codes.ravel()]
    return result


@dataclass(frozen=True)
class PairSample:
    """Pairs as row indices into the templates, with their raw distances."""

    a: IntArray
    b: IntArray
    distance: FloatArray


def sample_pairs(
    x: FloatArray, ids: npt.NDArray[Any], rows: IntArray, max_per_identity: int, seed: int
) -> tuple[PairSample, PairSample]:
    """(non-mated, mated) pairs among ``rows``."""
    sub = x[rows]
    squared = (sub**2).sum(1)
    i, j = np.triu_indices(len(rows), k=1)
    d = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * sub @ sub.T, 0))[i, j]
    cross = ids[rows[i]] != ids[rows[j]]
    non_mated = PairSample(rows[i[cross]], rows[j[cross]], d[cross])
    rng = np.random.default_rng(seed)
    keep = np.ones(len(rows), dtype=bool)
    names, codes = np.unique(ids[rows], return_inverse=True)
    for code in np.flatnonzero(np.bincount(codes.ravel()) > max_per_identity):
        members = np.flatnonzero(codes.ravel() == code)
        drop = rng.choice(members, len(members) - max_per_identity, replace=False)
        keep[drop] = False
    same = ~cross & keep[i] & keep[j]
    mated = PairSample(rows[i[same]], rows[j[same]], d[same])
    return non_mated, mated


def normalized_distances(
    normalizer: ScoreNormalizer | None, clusters: IntArray | None, p: PairSample
) -> FloatArray:
    """The distances of the pairs ``p``, normalized by ``normalizer`` when one is given."""
    if normalizer is None or clusters is None:
        return p.distance
    return normalizer.normalize_assigned(p.distance, clusters[p.a], clusters[p.b])


def _fmr_floor(errors: int, n: int) -> float:
    """FMR, or the rule-of-three bound 3/n when no false match was seen."""
    return errors / n if errors else 3.0 / n


def _worst_ratio(
    t: LabelledTemplates,
    non_mated: PairSample,
    scores: FloatArray,
    threshold: float,
    target_groups: Mapping[str, Sequence[str]],
) -> float:
    """Largest max/min FMR ratio over attributes (3/N floor), on the given pairs."""
    worst = 1.0
    for attribute, groups in target_groups.items():
        labels = t.groups[attribute]
        rates = []
        for group in groups:
            inside = (labels[non_mated.a] == group) & (labels[non_mated.b] == group)
            n = int(inside.sum())
            if n:
                rates.append(_fmr_floor(int((scores[inside] <= threshold).sum()), n))
        if len(rates) >= 2:
            worst = max(worst, max(rates) / min(rates))
    return worst


def _target_groups(t: LabelledTemplates, min_identities: int) -> dict[str, list[str]]:
    out = {}
    for attribute, labels in t.groups.items():
        counts = {
            g: len(np.unique(t.identities[labels == g])) for g in np.unique(labels) if g != ""
        }
        out[attribute] = sorted(g for g, c in counts.items() if c >= min_identities)
    return out


@dataclass(frozen=True)
class GroupRates:
    """One group's rates for one method at that method's overall threshold.

    ``fmr_bound`` is True when no false match was seen and ``fmr`` holds the
    rule-of-three upper bound 3/N instead of 0.
    """

    attribute: str
    group: str
    n_identities: int
    n_non_mated: int
    n_mated: int
    false_matches: int
    fmr: float
    fmr_bound: bool
    fmr_ci: tuple[float, float]
    fnmr: float | None
    fnmr_ci: tuple[float, float] | None
    enough: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "group": self.group,
            "n_identities": self.n_identities,
            "n_non_mated": self.n_non_mated,
            "n_mated": self.n_mated,
            "false_matches": self.false_matches,
            "fmr": self.fmr,
            "fmr_is_rule_of_three_bound": self.fmr_bound,
            "fmr_ci95": list(self.fmr_ci),
            "fnmr": self.fnmr,
            "fnmr_ci95": list(self.fnmr_ci) if self.fnmr_ci else None,
            "enough_identities": self.enough,
        }


@dataclass(frozen=True)
class MethodResult:
    """Everything measured for one method (raw or a normalizer) over the held-out folds.

    Attributes
    ----------
    method : str
    threshold : float
        One distance threshold at the target FMR over all held-out non-mated pairs.
    overall_fmr, overall_fnmr : float
    overall_fnmr_ci : (float, float)
    groups : list of GroupRates
    ratios : dict
        Attribute -> {"ratio", "ci95", "max_group", "min_group", "lower_bound"}
        among groups with enough identities.
    clusters : list of int
        Number of clusters chosen per fold (empty for raw).
    """

    method: str
    threshold: float
    overall_fmr: float
    overall_fnmr: float
    overall_fnmr_ci: tuple[float, float]
    groups: list[GroupRates]
    ratios: dict[str, dict[str, Any]]
    clusters: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "overall_fmr": self.overall_fmr,
            "overall_fnmr": self.overall_fnmr,
            "overall_fnmr_ci95": list(self.overall_fnmr_ci),
            "groups": [g.to_dict() for g in self.groups],
            "ratios": self.ratios,
            "clusters_per_fold": self.clusters,
        }


@dataclass(frozen=True)
class MitigationStudy:
    """Raw vs normalized, per group, at the same overall FMR, on held-out identities."""

    target_fmr: float
    folds: int
    n_images: int
    n_identities: int
    n_non_mated: int
    n_mated: int
    min_identities: int
    methods: list[MethodResult]
    replicates: int

    def method(self, name: str) -> MethodResult:
        return next(m for m in self.methods if m.method == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_fmr": self.target_fmr,
            "folds": self.folds,
            "n_images": self.n_images,
            "n_identities": self.n_identities,
            "n_non_mated": self.n_non_mated,
            "n_mated": self.n_mated,
            "min_identities": self.min_identities,
            "bootstrap_replicates": self.replicates,
            "methods": [m.to_dict() for m in self.methods],
        }


def _fit(
    kind: str, t: LabelledTemplates, rows: IntArray, k: int, target_fmr: float, seed: int
) -> ScoreNormalizer:
    return NORMALIZERS[kind].fit(
        t.vectors[rows], t.identities[rows], model_id="evaluation", clusters=k,
        target_fmr=target_fmr, seed=seed,
    )


def _choose_clusters(
    kind: str,
    t: LabelledTemplates,
    fold: IntArray,
    held_out: int,
    folds: int,
    candidates: Sequence[int],
    target_fmr: float,
    target_groups: Mapping[str, Sequence[str]],
    max_fnmr_increase: float,
    max_per_identity: int,
    seed: int,
) -> int:
    """k chosen on the calibration folds only: fit on all but one of them, score on that one."""
    if len(candidates) == 1:
        return candidates[0]
    inner = (held_out + 1) % folds
    fit_rows = np.flatnonzero((fold != held_out) & (fold != inner))
    score_rows = np.flatnonzero(fold == inner)
    non_mated, mated = sample_pairs(t.vectors, t.identities, score_rows, max_per_identity, seed)
    raw_threshold = threshold_at_fmr(non_mated.distance, target_fmr)
    raw_fnmr = float(np.mean(mated.distance > raw_threshold))
    scored = []
    for k in candidates:
        normalizer = _fit(kind, t, fit_rows, k, target_fmr, seed)
        clusters = np.zeros(len(t.vectors), dtype=np.int64)
        clusters[score_rows] = normalizer.clusters_of(t.vectors[score_rows])
        nm = normalized_distances(normalizer, clusters, non_mated)
        threshold = threshold_at_fmr(nm, target_fmr)
        fnmr = float(np.mean(normalized_distances(normalizer, clusters, mated) > threshold))
        ratio = _worst_ratio(t, non_mated, nm, threshold, target_groups)
        # Within the FNMR budget first, then the smallest ratio, then the smallest k.
        scored.append((fnmr - raw_fnmr > max_fnmr_increase, ratio, k))
    return min(scored)[2]


class _Bootstrap:
    """Identity-resampling replicates shared by every group and method (paired comparison)."""

    def __init__(self, identities: npt.NDArray[Any], replicates: int, seed: int) -> None:
        self.names, codes = np.unique(identities, return_inverse=True)
        self.codes = codes.ravel()
        rng = np.random.default_rng(seed)
        n = len(self.names)
        self.draws = np.stack(
            [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(replicates)]
        ).astype(np.float64)

    def rates(
        self, errors: npt.NDArray[np.bool_], a: IntArray, b: IntArray | None
    ) -> tuple[FloatArray, FloatArray]:
        """(wrong, total) weighted counts per replicate for pairs of rows a (and b)."""
        n = len(self.names)
        ca = self.codes[a]
        key = ca if b is None else ca * n + self.codes[b]
        keys, inverse = np.unique(key, return_inverse=True)
        totals = np.bincount(inverse.ravel()).astype(np.float64)
        wrong = np.bincount(inverse.ravel(), weights=errors.astype(np.float64))
        first = keys if b is None else keys // n
        second = None if b is None else keys % n
        out_wrong = np.empty(len(self.draws))
        out_total = np.empty(len(self.draws))
        for r, draws in enumerate(self.draws):
            weight = draws[first] if second is None else draws[first] * draws[second]
            out_wrong[r], out_total[r] = weight @ wrong, weight @ totals
        return out_wrong, out_total


def _interval(values: FloatArray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _method_result(
    name: str,
    t: LabelledTemplates,
    non_mated: PairSample,
    mated: PairSample,
    nm_scores: FloatArray,
    m_scores: FloatArray,
    target_fmr: float,
    target_groups: Mapping[str, Sequence[str]],
    boot: _Bootstrap,
    clusters: list[int],
) -> MethodResult:
    threshold = threshold_at_fmr(nm_scores, target_fmr)
    misses = m_scores > threshold
    wrong, total = boot.rates(misses, mated.a, None)
    groups: list[GroupRates] = []
    ratios: dict[str, dict[str, Any]] = {}
    for attribute, labels in t.groups.items():
        replicate_rates: dict[str, FloatArray] = {}
        for group in sorted(g for g in np.unique(labels) if g != ""):
            inside = (labels[non_mated.a] == group) & (labels[non_mated.b] == group)
            mated_inside = labels[mated.a] == group
            n = int(inside.sum())
            if n == 0:
                continue
            false = nm_scores[inside] <= threshold
            errors = int(false.sum())
            w, tot = boot.rates(false, non_mated.a[inside], non_mated.b[inside])
            with np.errstate(invalid="ignore", divide="ignore"):
                rep = np.where(tot > 0, np.maximum(w, 3.0) / tot, np.nan)
            replicate_rates[group] = rep
            fnmr = fnmr_ci = None
            if mated_inside.any():
                fnmr = float(misses[mated_inside].mean())
                mw, mt = boot.rates(misses[mated_inside], mated.a[mated_inside], None)
                with np.errstate(invalid="ignore", divide="ignore"):
                    fnmr_ci = _interval(mw / mt)
            with np.errstate(invalid="ignore", divide="ignore"):
                fmr_ci = _interval(w / tot)
            if not errors:
                fmr_ci = (0.0, 3.0 / n)
            groups.append(
                GroupRates(
                    attribute, group, len(np.unique(t.identities[labels == group])), n,
                    int(mated_inside.sum()), errors, _fmr_floor(errors, n), errors == 0,
                    fmr_ci, fnmr, fnmr_ci, group in target_groups.get(attribute, ()),
                )
            )
        usable = [g for g in groups if g.attribute == attribute and g.enough]
        if len(usable) >= 2:
            high = max(usable, key=lambda g: g.fmr)
            low = min(usable, key=lambda g: g.fmr)
            stacked = np.stack([replicate_rates[g.group] for g in usable])
            with np.errstate(invalid="ignore", divide="ignore"):
                rep_ratio = np.nanmax(stacked, 0) / np.nanmin(stacked, 0)
            ratios[attribute] = {
                "ratio": high.fmr / low.fmr,
                "ci95": list(_interval(rep_ratio)),
                "max_group": high.group,
                "min_group": low.group,
                "lower_bound": low.fmr_bound,
                "groups": [g.group for g in usable],
            }
    with np.errstate(invalid="ignore", divide="ignore"):
        fnmr_ci = _interval(wrong / total)
    return MethodResult(
        name, threshold, float(np.mean(nm_scores <= threshold)), float(misses.mean()),
        fnmr_ci, groups, ratios, clusters,
    )


def study_mitigation(
    templates: LabelledTemplates,
    *,
    methods: Sequence[str] = ("fsn", "cluster-z"),
    clusters: Sequence[int] = (10, 20, 50, 100),
    folds: int = 5,
    target_fmr: float = 1e-3,
    min_identities: int = 50,
    max_fnmr_increase: float = 0.01,
    max_images_per_identity: int = 10,
    replicates: int = 200,
    seed: int = 0,
) -> MitigationStudy:
    """Raw vs normalized error rates per group on identities disjoint from the fitting ones.

    Parameters
    ----------
    templates : LabelledTemplates
    methods : names in :data:`NORMALIZERS`
    clusters : candidate numbers of k-means clusters (chosen per fold, on calibration folds)
    folds : identity folds
    target_fmr : the overall FMR every method is thresholded at
    min_identities : groups with fewer identities are reported but enter no ratio
    max_fnmr_increase : the FNMR cost allowed when choosing k
    max_images_per_identity : mated pairs use at most this many images per identity
    replicates, seed : bootstrap replicates, and the seed of every draw

    Raises
    ------
    EvaluationError
        Unknown method or too few identities for the folds.
    """
    if not clusters or any(k < 1 for k in clusters):
        raise EvaluationError(
            "The 'clusters' parameter must list at least one number of clusters >= 1. "
            f"Got {list(clusters)} instead."
        )
    unknown = [m for m in methods if m not in NORMALIZERS]
    if unknown:
        raise EvaluationError(
            f"Unknown normalizer(s) {unknown}. Pick among {sorted(NORMALIZERS)}."
        )
    t = templates
    fold = identity_folds(t.identities, folds, seed=seed)
    target_groups = _target_groups(t, min_identities)
    nm_parts: list[PairSample] = []
    m_parts: list[PairSample] = []
    scores: dict[str, tuple[list[FloatArray], list[FloatArray]]] = {
        m: ([], []) for m in (RAW, *methods)
    }
    chosen: dict[str, list[int]] = {m: [] for m in methods}
    for held_out in range(folds):
        rows = np.flatnonzero(fold == held_out)
        fit_rows = np.flatnonzero(fold != held_out)
        non_mated, mated = sample_pairs(
            t.vectors, t.identities, rows, max_images_per_identity, seed
        )
        nm_parts.append(non_mated)
        m_parts.append(mated)
        scores[RAW][0].append(non_mated.distance)
        scores[RAW][1].append(mated.distance)
        for kind in methods:
            k = _choose_clusters(
                kind, t, fold, held_out, folds, clusters, target_fmr, target_groups,
                max_fnmr_increase, max_images_per_identity, seed,
            )
            chosen[kind].append(k)
            normalizer = _fit(kind, t, fit_rows, k, target_fmr, seed)
            assigned = np.zeros(len(t.vectors), dtype=np.int64)
            assigned[rows] = normalizer.clusters_of(t.vectors[rows])
            scores[kind][0].append(normalized_distances(normalizer, assigned, non_mated))
            scores[kind][1].append(normalized_distances(normalizer, assigned, mated))
    non_mated_all = PairSample(
        np.concatenate([p.a for p in nm_parts]), np.concatenate([p.b for p in nm_parts]),
        np.concatenate([p.distance for p in nm_parts]),
    )
    mated_all = PairSample(
        np.concatenate([p.a for p in m_parts]), np.concatenate([p.b for p in m_parts]),
        np.concatenate([p.distance for p in m_parts]),
    )
    boot = _Bootstrap(t.identities, replicates, seed)
    results = [
        _method_result(
            name, t, non_mated_all, mated_all, np.concatenate(scores[name][0]),
            np.concatenate(scores[name][1]), target_fmr, target_groups, boot,
            chosen.get(name, []),
        )
        for name in (RAW, *methods)
    ]
    return MitigationStudy(
        target_fmr, folds, len(t.vectors), len(np.unique(t.identities)),
        len(non_mated_all.distance), len(mated_all.distance), min_identities, results,
        replicates,
    )

