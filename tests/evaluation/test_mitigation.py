"""Mitigation study: identity-disjoint folds, one threshold per method, a narrower FMR gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetrust.errors import EvaluationError
from facetrust.evaluation import write_report
from facetrust.evaluation.mitigation import (
    RAW,
    LabelledTemplates,
    identity_folds,
    study_mitigation,
)


def _clustered(seed: int, identities: int = 120) -> LabelledTemplates:
    """Two groups: group "b" crowds its identities together, so it false-matches more."""
    rng = np.random.default_rng(seed)
    rows, ids, groups = [], [], []
    for group, (centre, spread) in (("a", (0.0, 0.35)), ("b", (3.0, 0.22))):
        for identity in range(identities):
            face = centre + rng.normal(0, spread, 16)
            for _ in range(3):
                rows.append(face + rng.normal(0, 0.08, 16))
                ids.append(f"{group}-{identity}")
                groups.append(group)
    return LabelledTemplates(
        np.array(rows), np.array(ids), {"cohort": np.array(groups, dtype=object)}
    )


def test_identity_folds_keep_each_identity_in_one_fold() -> None:
    ids = np.array([f"p{i % 37}" for i in range(200)])
    fold = identity_folds(ids, 5, seed=3)
    for name in np.unique(ids):
        assert len(set(fold[ids == name])) == 1
    per_fold = [len(np.unique(ids[fold == f])) for f in range(5)]
    assert sorted(per_fold) == [7, 7, 7, 8, 8]
    assert np.array_equal(fold, identity_folds(ids, 5, seed=3))
    assert not np.array_equal(fold, identity_folds(ids, 5, seed=4))
    with pytest.raises(EvaluationError, match="folds"):
        identity_folds(ids, 38)


def test_every_method_is_thresholded_at_the_same_overall_fmr_and_the_gap_narrows() -> None:
    study = study_mitigation(
        _clustered(7), clusters=(2, 4), folds=4, target_fmr=1e-2, min_identities=50,
        replicates=50,
    )
    assert [m.method for m in study.methods] == [RAW, "fsn", "cluster-z"]
    for method in study.methods:
        # One threshold over every held-out non-mated pair: same overall FMR for all.
        assert 0.0099 <= method.overall_fmr <= 0.01
        for group in method.groups:
            assert group.fmr_ci[0] <= group.fmr <= group.fmr_ci[1] or group.fmr_bound
    raw = study.method(RAW)
    by_group = {g.group: g for g in raw.groups}
    assert by_group["b"].fmr > 5 * by_group["a"].fmr
    for name in ("fsn", "cluster-z"):
        method = study.method(name)
        assert set(method.clusters) <= {2, 4} and len(method.clusters) == 4
        assert method.ratios["cohort"]["ratio"] < raw.ratios["cohort"]["ratio"] / 2
    json.dumps(study.to_dict())


def test_pairs_are_only_within_held_out_folds() -> None:
    templates = _clustered(1, identities=20)
    study = study_mitigation(templates, methods=(), folds=4, target_fmr=1e-2, replicates=5)
    fold = identity_folds(templates.identities, 4)
    sizes = np.bincount(fold)
    within = sum(n * (n - 1) // 2 - (n // 3) * 3 for n in sizes)  # minus 3 mated pairs/identity
    assert study.n_non_mated == within
    assert study.n_mated == 40 * 3


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="Unknown normalizer"):
        study_mitigation(_clustered(1, identities=20), methods=("magic",))


def test_report_shows_before_and_after_side_by_side(tmp_path: Path) -> None:
    study = study_mitigation(
        _clustered(3, identities=40), clusters=(2,), folds=3, target_fmr=1e-2, replicates=10,
        min_identities=10,
    )
    files = write_report(tmp_path, mitigation=study)
    page = files.html.read_text()
    assert "Reducing the demographic gap" in page
    assert page.count("before and after") == 1 and "data:image/png;base64," in page
    record = json.loads(files.json.read_text())
    assert [m["method"] for m in record["mitigation"]["methods"]] == [RAW, "fsn", "cluster-z"]
