"""Score normalizers narrow the false-match gap between a tight and a spread cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrust.errors import InvalidParameter
from facetrust.score_normalization import (
    ClusterZNormalizer,
    FairScoreNormalizer,
    PairwiseFairScoreNormalizer,
    ScoreNormalizer,
    assign_clusters,
    impostor_distances,
    kmeans,
    load_normalizer,
    threshold_at_fmr,
)


def _two_groups(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group 0's identities are spread out; group 1's crowd together (more close impostors)."""
    rng = np.random.default_rng(seed)
    rows, ids, groups = [], [], []
    for group, (centre, spread) in enumerate(((0.0, 0.35), (3.0, 0.22))):
        for identity in range(60):
            face = centre + rng.normal(0, spread, 16)
            for _ in range(3):
                rows.append(face + rng.normal(0, 0.08, 16))
                ids.append(f"{group}-{identity}")
                groups.append(group)
    return np.array(rows), np.array(ids), np.array(groups)


def _fmr_by_group(
    normalizer: ScoreNormalizer | None, seed: int, threshold: float
) -> list[float]:
    x, ids, groups = _two_groups(seed)
    rates = []
    for group in (0, 1):
        rows = np.flatnonzero(groups == group)
        a, b = np.triu_indices(len(rows), 1)
        a, b = rows[a], rows[b]
        impostor = ids[a] != ids[b]
        d = np.linalg.norm(x[a] - x[b], axis=1)
        if normalizer is not None:
            d = normalizer.normalize(d, x[a], x[b])
        rates.append(float(np.mean(d[impostor] <= threshold)))
    return rates


def test_threshold_at_fmr_counts_exactly() -> None:
    impostor = np.arange(1, 1001) / 1000  # 0.001 .. 1.0
    threshold = threshold_at_fmr(impostor, 0.01)
    assert np.mean(impostor <= threshold) == 0.01
    assert threshold_at_fmr(impostor, 1e-4) < impostor.min()  # no false match allowed


def test_kmeans_separates_two_obvious_clusters() -> None:
    x, _, groups = _two_groups(1)
    labels = assign_clusters(x, kmeans(x, 2, seed=3))
    assert len(set(labels[groups == 0])) == 1 and len(set(labels[groups == 1])) == 1
    assert labels[groups == 0][0] != labels[groups == 1][0]


@pytest.mark.parametrize(
    "kind", [FairScoreNormalizer, ClusterZNormalizer, PairwiseFairScoreNormalizer]
)
def test_normalizer_fitted_on_other_identities_narrows_the_fmr_gap(
    kind: type[FairScoreNormalizer] | type[ClusterZNormalizer] | type[PairwiseFairScoreNormalizer],
    tmp_path: Path,
) -> None:
    fit_x, fit_ids, _ = _two_groups(seed=10)  # calibration identities, disjoint from the test's
    normalizer = kind.fit(fit_x, fit_ids, model_id="toy", clusters=2, target_fmr=1e-2)
    threshold = threshold_at_fmr(impostor_distances(fit_x, fit_ids), 1e-2)
    before = _fmr_by_group(None, 20, threshold)
    after = _fmr_by_group(normalizer, 20, threshold)
    assert before[1] > 5 * max(before[0], 1e-4)  # the tight group false-matches far more
    assert max(after) / max(min(after), 1e-4) < max(before) / max(min(before), 1e-4) / 2
    normalizer.save(tmp_path / "n.json")
    again = load_normalizer(tmp_path / "n.json")
    d = np.array([0.5, 0.9])
    np.testing.assert_allclose(
        again.normalize(d, fit_x[:2], fit_x[5:7]), normalizer.normalize(d, fit_x[:2], fit_x[5:7])
    )


def test_bad_fit_input_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="identity labels"):
        FairScoreNormalizer.fit(np.zeros((5, 4)), ["a"] * 4, model_id="m")
    with pytest.raises(InvalidParameter, match="'clusters' parameter"):
        FairScoreNormalizer.fit(np.zeros((5, 4)), list("abcde"), model_id="m", clusters=9)


def test_rotated_normalizer_gives_the_same_distances_on_rotated_templates() -> None:
    x, ids, _ = _two_groups(seed=4)
    normalizer = FairScoreNormalizer.fit(x, ids, model_id="toy", clusters=2, target_fmr=1e-2)
    rotation, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(16, 16)))
    d = np.linalg.norm(x[:20] - x[40:60], axis=1)
    np.testing.assert_allclose(
        normalizer.rotated(rotation).normalize(d, x[:20] @ rotation.T, x[40:60] @ rotation.T),
        normalizer.normalize(d, x[:20], x[40:60]),
    )


def test_pairwise_normalizer_holds_every_pair_of_clusters_at_the_target_fmr() -> None:
    """In-sample, each cluster pair's impostors (across clusters too) sit at the target FMR.

    Plain fair score normalization holds only the within-cluster cells there.
    """
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 1.2, (3, 16))
    spreads = (0.45, 0.3, 0.2)
    x = np.concatenate(
        [c + rng.normal(0, s, (150, 16)) for c, s in zip(centres, spreads, strict=True)]
    )
    ids = np.arange(len(x)).astype(str)  # one image per identity: every pair is an impostor
    a, b = np.triu_indices(len(x), 1)
    raw = np.linalg.norm(x[a] - x[b], axis=1)
    off_target = {}
    for kind in (PairwiseFairScoreNormalizer, FairScoreNormalizer):
        normalizer = kind.fit(x, ids, model_id="toy", clusters=3, target_fmr=1e-2, seed=2)
        labels = normalizer.clusters_of(x)
        d = normalizer.normalize_assigned(raw, labels[a], labels[b])
        low, high = np.minimum(labels[a], labels[b]), np.maximum(labels[a], labels[b])
        gaps = []
        for ca in range(3):
            for cb in range(ca, 3):
                cell = (low == ca) & (high == cb)
                rate = np.mean(d[cell] <= normalizer.global_threshold)
                gaps.append(abs(rate - 1e-2) * cell.sum())  # in false matches
        off_target[kind] = max(gaps)
        if kind is PairwiseFairScoreNormalizer:
            assert normalizer.clusters_fitted == 6  # 3 within- and 3 between-cluster cells
            np.testing.assert_allclose(normalizer.pair_deltas, normalizer.pair_deltas.T)
    assert off_target[PairwiseFairScoreNormalizer] <= 1.5  # rounding: one pair either way
    assert off_target[FairScoreNormalizer] > 20
