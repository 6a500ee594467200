"""The demographic gap on every held-out pair: joint max/min FMR ratio, raw vs normalized.

Protocol (identity-disjoint cross-fitting over *all* pairs):

1. Identities are split into ``folds`` seeded folds (:func:`identity_folds`).
2. A pair whose two identities lie in folds ``i`` and ``j`` is scored by a
   normalizer fitted on every *other* fold (``i == j``: the ``folds - 1``
   others; ``i != j``: the ``folds - 2`` others). No pair is ever scored by a
   normalizer that saw either of its identities, and every cross-identity
   pair of the dataset is scored, not only the pairs within a fold: a group's
   FMR is measured on all of its non-mated pairs, so rates near 1e-3 are
   resolvable in small groups instead of sitting on the 3/N floor.
   Mated pairs (at most ``max_images_per_identity`` photos per person) use the
   normalizer fitted without their fold.
3. Each method gets ONE threshold at ``target_fmr`` over all non-mated pairs.
4. Groups: every value of every label attribute, and every intersection of
   two attributes (``race+gender``: ``caucasian&female``...). A group's FMR is
   over its within-group non-mated pairs (rule-of-three bound 3/N when it has
   no false match). Groups with at least ``min_identities`` identities enter
   the max/min FMR ratios: per attribute, and jointly over all of them.
5. 95% intervals: identity bootstrap. Each replicate redraws identities
   (a pair's weight is the product of its identities' draws), re-thresholds
   each method at ``target_fmr`` on the reweighted pairs (so the threshold's
   own uncertainty is included) and recomputes every rate and ratio; the same
   draws serve every method, so the reduction factor (raw ratio / normalized
   ratio) and the FNMR difference get paired intervals.

Distances stay distances: lower is more similar, match when ``<=`` threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError
from ..score_normalization import ScoreNormalizer
from .fair_point import mated_pairs_only
from .mitigation import NORMALIZERS, RAW, LabelledTemplates, PairSample, identity_folds

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Scores above this multiple of the target FMR, as a quantile of the within-fold
#: non-mated scores, are not kept (only the low tail decides matches; bootstrap
#: replicates that would need more of it are reported as missing).
TAIL_FACTOR = 5.0


@dataclass(frozen=True)
class MethodSpec:
    """A normalizer to evaluate: ``kind`` in :data:`~.mitigation.NORMALIZERS`, ``clusters`` k."""

    name: str
    kind: str
    clusters: int


@dataclass(frozen=True)
class _Group:
    attribute: str
    name: str
    member: npt.NDArray[np.bool_]
    per_identity: FloatArray  # images of each identity in the group
    n_identities: int
    n_pairs: float


def _groups(t: LabelledTemplates, codes: IntArray, n_ids: int) -> list[_Group]:
    labels = dict(t.groups)
    for (a1, l1), (a2, l2) in combinations(sorted(t.groups.items()), 2):
        both = (l1 != "") & (l2 != "")
        labels[f"{a1}+{a2}"] = np.where(
            both, np.char.add(np.char.add(l1.astype(str), "&"), l2.astype(str)), ""
        ).astype(object)
    out = []
    for attribute, values in labels.items():
        for name in sorted(g for g in np.unique(values) if g != ""):
            member = values == name
            n = np.bincount(codes[member], minlength=n_ids).astype(np.float64)
            pairs = (n.sum() ** 2 - (n**2).sum()) / 2
            out.append(_Group(attribute, str(name), member, n, int((n > 0).sum()), pairs))
    return out


@dataclass(frozen=True)
class _Scored:
    """One method's low tail of non-mated scores (sorted) and every mated score."""

    a: IntArray
    b: IntArray
    score: FloatArray
    mated: FloatArray


def _fit_all(
    spec: MethodSpec, t: LabelledTemplates, fold: IntArray, folds: int, target_fmr: float,
    seed: int,
) -> dict[tuple[int, int], ScoreNormalizer]:
    fitted = {}
    for i in range(folds):
        for j in range(i, folds):
            rows = np.flatnonzero((fold != i) & (fold != j))
            fitted[(i, j)] = NORMALIZERS[spec.kind].fit(
                t.vectors[rows], t.identities[rows], model_id="evaluation",
                clusters=spec.clusters, target_fmr=target_fmr, seed=seed,
            )
    return fitted


def _score(
    t: LabelledTemplates, fold: IntArray, folds: int, mated: PairSample,
    fitted: Mapping[tuple[int, int], ScoreNormalizer] | None, target_fmr: float,
) -> _Scored:
    """Score every cross-identity pair (keeping the low tail) and every mated pair."""
    x, ids = t.vectors, t.identities
    members = [np.flatnonzero(fold == f) for f in range(folds)]
    squared = (x**2).sum(1)
    cells = [(i, i) for i in range(folds)] + [
        (i, j) for i in range(folds) for j in range(i + 1, folds)
    ]
    kept: list[tuple[IntArray, IntArray, FloatArray]] = []
    cap = np.inf
    for number, (i, j) in enumerate(cells):
        ri, rj = members[i], members[j]
        d = np.sqrt(np.maximum(
            squared[ri, None] + squared[None, rj] - 2 * x[ri] @ x[rj].T, 0
        ))
        keep = ids[ri, None] != ids[None, rj]
        if i == j:
            keep &= np.triu(np.ones(keep.shape, dtype=bool), k=1)
        ii, jj = np.nonzero(keep)
        a, b = ri[ii], rj[jj]
        s = d[ii, jj]
        if fitted is not None:
            n = fitted[(i, j)]
            s = n.normalize_assigned(s, n.clusters_of(x[ri])[ii], n.clusters_of(x[rj])[jj])
        low = s <= cap
        kept.append((a[low], b[low], s[low]))
        if number == folds - 1:  # every within-fold cell seen: fix the tail's cap
            cap = float(np.quantile(np.concatenate([k[2] for k in kept]),
                                    min(1.0, TAIL_FACTOR * target_fmr)))
            kept = [(ka[ks <= cap], kb[ks <= cap], ks[ks <= cap]) for ka, kb, ks in kept]
    a = np.concatenate([k[0] for k in kept])
    b = np.concatenate([k[1] for k in kept])
    s = np.concatenate([k[2] for k in kept])
    order = np.argsort(s, kind="stable")
    m = mated.distance
    if fitted is not None:
        m = np.empty(len(mated.distance))
        for f in range(folds):
            inside = fold[mated.a] == f
            n = fitted[(f, f)]
            m[inside] = n.normalize_assigned(
                mated.distance[inside], n.clusters_of(x[mated.a[inside]]),
                n.clusters_of(x[mated.b[inside]]),
            )
    return _Scored(a[order], b[order], s[order], m)


def _interval(values: FloatArray) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]


def _rates(
    scored: _Scored, groups: Sequence[_Group], codes: IntArray, mated: PairSample,
    draws: FloatArray, n_all: FloatArray, target_fmr: float, chunk: int = 20,
) -> dict[str, FloatArray]:
    """Per replicate (rows of ``draws``): the cutoff, FMR and FNMR overall and per group.

    A replicate whose cutoff falls beyond the kept tail gets NaN everywhere.
    FMR of a group with no weighted false match is its 3/N bound (``fmr_floor``).
    """
    r_count = len(draws)
    ca, cb = codes[scored.a], codes[scored.b]
    totals = ((draws @ n_all) ** 2 - (draws**2) @ (n_all**2)) / 2
    out: dict[str, FloatArray] = {
        "cutoff": np.full(r_count, np.nan),
        "fnmr": np.full(r_count, np.nan),
    }
    in_group = [g.member[scored.a] & g.member[scored.b] for g in groups]
    group_totals = [((draws @ g.per_identity) ** 2 - (draws**2) @ (g.per_identity**2)) / 2
                    for g in groups]
    for g in groups:
        out[f"fm:{g.attribute}:{g.name}"] = np.full(r_count, np.nan)
        out[f"fnmr:{g.attribute}:{g.name}"] = np.full(r_count, np.nan)
    mated_codes = codes[mated.a]
    mated_in = [g.member[mated.a] for g in groups]
    for start in range(0, r_count, chunk):
        w = draws[start : start + chunk]
        weights = w[:, ca] * w[:, cb]
        cumulative = np.cumsum(weights, axis=1)
        allowed = target_fmr * totals[start : start + chunk]
        length = np.array([np.searchsorted(c, a, side="right")
                           for c, a in zip(cumulative, allowed, strict=True)])
        valid = length < len(scored.score)
        cutoff = np.where(valid, scored.score[np.minimum(length, len(scored.score) - 1)], np.nan)
        rows = np.arange(start, start + len(w))
        out["cutoff"][rows] = cutoff
        prefix = np.arange(len(scored.score))[None, :] < length[:, None]
        mw = w[:, mated_codes]
        miss = scored.mated[None, :] >= cutoff[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["fnmr"][rows] = np.where(valid, (mw * miss).sum(1) / mw.sum(1), np.nan)
            for g, inside, total, m_in in zip(groups, in_group, group_totals, mated_in,
                                              strict=True):
                fm = (weights * (prefix & inside[None, :])).sum(1)
                out[f"fm:{g.attribute}:{g.name}"][rows] = np.where(
                    valid, np.where(fm > 0, fm, 3.0) / total[rows], np.nan)
                den = (mw * m_in[None, :]).sum(1)
                out[f"fnmr:{g.attribute}:{g.name}"][rows] = np.where(
                    valid & (den > 0), (mw * miss * m_in[None, :]).sum(1) / den, np.nan)
    return out


def _ratio(rates: Mapping[str, FloatArray], keys: Sequence[str]) -> FloatArray:
    stacked = np.stack([rates[k] for k in keys])
    result: FloatArray = stacked.max(0) / stacked.min(0)
    return result


@dataclass(frozen=True)
class GapStudy:
    """What :func:`study_gap` measured (JSON-ready through :meth:`to_dict`)."""

    seed: int
    folds: int
    target_fmr: float
    min_identities: int
    replicates: int
    n_images: int
    n_identities: int
    n_non_mated: int
    n_mated: int
    groups: list[dict[str, Any]]
    methods: list[dict[str, Any]]

    def method(self, name: str) -> dict[str, Any]:
        return next(m for m in self.methods if m["method"] == name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GapStudy:
        """The study written by :meth:`to_dict`."""
        return cls(
            data["seed"], data["folds"], data["target_fmr"], data["min_identities"],
            data["bootstrap_replicates"], data["n_images"], data["n_identities"],
            data["n_non_mated"], data["n_mated"], data["groups"], data["methods"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "folds": self.folds, "target_fmr": self.target_fmr,
            "min_identities": self.min_identities, "bootstrap_replicates": self.replicates,
            "n_images": self.n_images, "n_identities": self.n_identities,
            "n_non_mated": self.n_non_mated, "n_mated": self.n_mated,
            "groups": self.groups, "methods": self.methods,
        }


def study_gap(
    templates: LabelledTemplates,
    methods: Sequence[MethodSpec],
    *,
    folds: int = 5,
    target_fmr: float = 1e-3,
    min_identities: int = 50,
    max_images_per_identity: int = 10,
    replicates: int = 1000,
    seed: int = 0,
) -> GapStudy:
    """Raw vs normalized per group and jointly, on every cross-fitted held-out pair.

    Parameters
    ----------
    templates : LabelledTemplates
    methods : the normalizers to compare with raw distances
    folds : identity folds (at least 3: a cross-fold pair needs folds left to fit on)
    target_fmr : the overall FMR every method is thresholded at
    min_identities : groups with fewer identities are reported but enter no ratio
    max_images_per_identity : mated pairs use at most this many photos per person
    replicates, seed : bootstrap replicates; the seed of folds, k-means and draws

    Returns
    -------
    GapStudy
        Per method: threshold, overall FMR/FNMR, per group FMR (``fmr_bound``
        when it is the 3/N bound) and FNMR with intervals, ratios per attribute
        and jointly (``"all"``) with intervals, and, for normalizers, the
        reduction factor of each ratio and the FNMR difference with paired
        intervals.
    """
    if folds < 3:
        raise EvaluationError(
            f"The 'folds' parameter of study_gap must be at least 3. Got {folds} instead."
        )
    unknown = [m.kind for m in methods if m.kind not in NORMALIZERS]
    if unknown:
        raise EvaluationError(f"Unknown normalizer(s) {unknown}. Pick among {sorted(NORMALIZERS)}.")
    t = templates
    names, inverse = np.unique(t.identities, return_inverse=True)
    codes: IntArray = inverse.ravel().astype(np.int64)
    n_ids = len(names)
    fold = identity_folds(t.identities, folds, seed=seed)
    groups = _groups(t, codes, n_ids)
    n_all = np.bincount(codes, minlength=n_ids).astype(np.float64)
    mated = mated_pairs_only(t, max_images_per_identity, seed)
    rng = np.random.default_rng(seed)
    draws = np.vstack([
        np.ones(n_ids),
        np.stack([np.bincount(rng.integers(0, n_ids, n_ids), minlength=n_ids)
                  for _ in range(replicates)]).astype(np.float64),
    ])
    eligible = [g for g in groups if g.n_identities >= min_identities]
    ratio_sets = {a: [f"fm:{g.attribute}:{g.name}" for g in eligible if g.attribute == a]
                  for a in dict.fromkeys(g.attribute for g in eligible)}
    ratio_sets = {a: k for a, k in ratio_sets.items() if len(k) >= 2}
    ratio_sets["all"] = [f"fm:{g.attribute}:{g.name}" for g in eligible]
    per_method: dict[str, dict[str, FloatArray]] = {}
    results = []
    n_non_mated = int((n_all.sum() ** 2 - (n_all**2).sum()) / 2)
    for spec in [MethodSpec(RAW, RAW, 0), *methods]:
        fitted = None if spec.kind == RAW else _fit_all(spec, t, fold, folds, target_fmr, seed)
        scored = _score(t, fold, folds, mated, fitted, target_fmr)
        rates = _rates(scored, groups, codes, mated, draws, n_all, target_fmr)
        per_method[spec.name] = rates
        results.append(_summarize(spec, scored, rates, groups, eligible, ratio_sets,
                                  per_method[RAW], n_non_mated))
    return GapStudy(
        seed, folds, target_fmr, min_identities, replicates, len(t.vectors), n_ids,
        n_non_mated, len(mated.distance),
        [{"attribute": g.attribute, "group": g.name, "n_identities": g.n_identities,
          "n_images": int(g.member.sum()), "n_non_mated": int(g.n_pairs),
          "n_mated": int(g.member[mated.a].sum()),
          "enough_identities": g.n_identities >= min_identities} for g in groups],
        results,
    )


def _summarize(
    spec: MethodSpec, scored: _Scored, rates: Mapping[str, FloatArray], groups: Sequence[_Group],
    eligible: Sequence[_Group], ratio_sets: Mapping[str, Sequence[str]],
    raw: Mapping[str, FloatArray], n_non_mated: int,
) -> dict[str, Any]:
    """Point estimates (row 0: every identity once) and intervals (the other rows)."""
    cutoff = float(rates["cutoff"][0])
    group_rows = []
    for g in groups:
        key = f"fm:{g.attribute}:{g.name}"
        false = int(np.sum((scored.score < cutoff) & g.member[scored.a] & g.member[scored.b]))
        group_rows.append({
            "attribute": g.attribute, "group": g.name, "false_matches": false,
            # A group with no non-mated pair at all (one identity) has no FMR.
            "fmr": float(rates[key][0]) if g.n_pairs else None,
            "fmr_is_rule_of_three_bound": false == 0,
            "fmr_ci95": _interval(rates[key][1:]),
            "fnmr": float(rates[f"fnmr:{g.attribute}:{g.name}"][0]),
            "fnmr_ci95": _interval(rates[f"fnmr:{g.attribute}:{g.name}"][1:]),
            "enough_identities": g in eligible,
        })
    bound = {f"fm:{r['attribute']}:{r['group']}": r["fmr_is_rule_of_three_bound"]
             for r in group_rows}
    ratios = {}
    for name, keys in ratio_sets.items():
        values = _ratio(rates, keys)
        point = np.array([rates[k][0] for k in keys])
        high, low = keys[int(point.argmax())], keys[int(point.argmin())]
        entry: dict[str, Any] = {
            "ratio": float(values[0]), "ci95": _interval(values[1:]),
            "max_group": high.split(":", 1)[1], "min_group": low.split(":", 1)[1],
            "min_is_bound": bound[low], "max_is_bound": bound[high],
            "groups": [k.split(":", 1)[1] for k in keys],
        }
        if spec.kind != RAW:
            reduction = _ratio(raw, keys) / values
            entry["reduction"] = float(reduction[0])
            entry["reduction_ci95"] = _interval(reduction[1:])
        ratios[name] = entry
    out: dict[str, Any] = {
        "method": spec.name, "kind": spec.kind, "clusters": spec.clusters or None,
        "threshold": float(np.nextafter(cutoff, -np.inf)),
        "overall_fmr": float(np.sum(scored.score < cutoff) / n_non_mated),
        "overall_fnmr": float(rates["fnmr"][0]), "overall_fnmr_ci95": _interval(rates["fnmr"][1:]),
        "groups": group_rows, "ratios": ratios,
        "replicates_missing": int(np.isnan(rates["cutoff"][1:]).sum()),
    }
    if spec.kind != RAW:
        difference = rates["fnmr"] - raw["fnmr"]
        out["fnmr_cost"] = float(difference[0])
        out["fnmr_cost_ci95"] = _interval(difference[1:])
    return out


def gap_verdict(
    studies: Sequence[GapStudy],
    method: str,
    *,
    ratio: str = "all",
    target_reduction: float = 2.0,
    max_fnmr_cost: float = 0.01,
) -> dict[str, Any]:
    """Is the target met by ``method`` on every split (seed) studied?

    ``met`` : on every seed, the point estimate of the ``ratio`` reduction
    factor is at least ``target_reduction`` and the FNMR cost at most
    ``max_fnmr_cost``. ``shown_at_95`` : on every seed, the lower end of the
    reduction's interval is at least ``target_reduction`` and the upper end of
    the FNMR cost's interval at most ``max_fnmr_cost``.
    """
    rows = []
    for study in studies:
        m = study.method(method)
        entry = m["ratios"].get(ratio)
        if entry is None or "reduction" not in entry:
            raise EvaluationError(
                f"Method {method!r} has no {ratio!r} ratio reduction in the study of seed "
                f"{study.seed}. Pick a normalizer and one of {sorted(m['ratios'])}."
            )
        rows.append({
            "seed": study.seed,
            "reduction": entry["reduction"],
            "reduction_ci95": entry["reduction_ci95"],
            "fnmr_cost": m["fnmr_cost"],
            "fnmr_cost_ci95": m["fnmr_cost_ci95"],
            "met": entry["reduction"] >= target_reduction and m["fnmr_cost"] <= max_fnmr_cost,
            "shown_at_95": entry["reduction_ci95"][0] >= target_reduction
            and m["fnmr_cost_ci95"][1] <= max_fnmr_cost,
        })
    return {
        "method": method, "ratio": ratio, "target_reduction": target_reduction,
        "max_fnmr_cost": max_fnmr_cost, "seeds": rows,
        "met": all(r["met"] for r in rows),
        "shown_at_95": all(r["shown_at_95"] for r in rows),
    }
