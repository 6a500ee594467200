"""Gap study: every pair scored out of fold, joint ratio over all groups, paired intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetrust.errors import EvaluationError
from facetrust.evaluation.fair_point import fit_shipped_normalizer
from facetrust.evaluation.gap_report import write_gap_report
from facetrust.evaluation.gap_study import MethodSpec, gap_verdict, study_gap
from facetrust.evaluation.mitigation import RAW, LabelledTemplates
from facetrust.score_normalization import threshold_at_fmr


def _clustered(seed: int, identities: int = 60) -> LabelledTemplates:
    """Group "b" crowds its identities together (more false matches); "site" is a 2nd label."""
    rng = np.random.default_rng(seed)
    rows, ids, groups, sites = [], [], [], []
    for group, (centre, spread) in (("a", (0.0, 0.35)), ("b", (3.0, 0.22))):
        for identity in range(identities):
            face = centre + rng.normal(0, spread, 16)
            for _ in range(3):
                rows.append(face + rng.normal(0, 0.08, 16))
                ids.append(f"{group}-{identity}")
                groups.append(group)
                sites.append("north" if identity % 2 else "south")
    return LabelledTemplates(
        np.array(rows), np.array(ids),
        {"cohort": np.array(groups, dtype=object), "site": np.array(sites, dtype=object)},
    )


def _all_non_mated(t: LabelledTemplates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.triu_indices(len(t.vectors), 1)
    keep = t.identities[a] != t.identities[b]
    a, b = a[keep], b[keep]
    return a, b, np.linalg.norm(t.vectors[a] - t.vectors[b], axis=1)


def test_raw_rates_cover_every_pair_of_every_group() -> None:
    t = _clustered(3, identities=40)
    study = study_gap(t, [], folds=3, target_fmr=1e-2, min_identities=20, replicates=20)
    a, b, d = _all_non_mated(t)
    assert study.n_non_mated == len(d)  # every cross-identity pair, not only within folds
    threshold = threshold_at_fmr(d, 1e-2)
    raw = study.method(RAW)
    assert raw["threshold"] == pytest.approx(threshold)
    assert raw["overall_fmr"] == pytest.approx(np.mean(d <= threshold))
    groups = {(g["attribute"], g["group"]): g for g in raw["groups"]}
    assert ("cohort+site", "b&north") in groups  # intersections of two attributes
    for (attribute, name), g in groups.items():
        labels = (
            np.char.add(np.char.add(t.groups["cohort"].astype(str), "&"),
                        t.groups["site"].astype(str))
            if attribute == "cohort+site" else t.groups[attribute]
        )
        inside = (labels[a] == name) & (labels[b] == name)
        assert g["false_matches"] == int(np.sum(d[inside] <= threshold))
        if g["false_matches"]:
            assert g["fmr"] == pytest.approx(np.mean(d[inside] <= threshold))
            assert g["fmr_ci95"][0] <= g["fmr"] <= g["fmr_ci95"][1]
        else:
            assert g["fmr"] == pytest.approx(3 / inside.sum())  # rule of three, flagged
            assert g["fmr_is_rule_of_three_bound"]
    joint = raw["ratios"]["all"]
    rates = [g["fmr"] for g in raw["groups"] if g["enough_identities"]]
    assert joint["ratio"] == pytest.approx(max(rates) / min(rates))


def test_normalization_narrows_the_joint_gap_with_paired_intervals(tmp_path: Path) -> None:
    t = _clustered(7)
    methods = [MethodSpec("fsn-k2", "fsn", 2), MethodSpec("pairwise-k2", "pairwise-fsn", 2)]
    study = study_gap(t, methods, folds=3, target_fmr=1e-2, min_identities=30, replicates=40)
    raw = study.method(RAW)
    assert raw["ratios"]["cohort"]["max_group"] == "cohort:b"
    for spec in methods:
        m = study.method(spec.name)
        assert 0.0095 <= m["overall_fmr"] <= 0.01  # the same overall FMR as raw
        joint = m["ratios"]["all"]
        assert joint["reduction"] == pytest.approx(raw["ratios"]["all"]["ratio"] / joint["ratio"])
        assert joint["reduction"] > 2
        assert joint["reduction_ci95"][0] <= joint["reduction"] <= joint["reduction_ci95"][1]
        assert m["fnmr_cost"] == pytest.approx(m["overall_fnmr"] - raw["overall_fnmr"])
    verdict = gap_verdict([study], "fsn-k2", target_reduction=2.0, max_fnmr_cost=0.5)
    assert verdict["met"] and verdict["seeds"][0]["seed"] == 0
    assert not gap_verdict([study], "fsn-k2", target_reduction=1e6)["met"]
    with pytest.raises(EvaluationError, match="no 'all' ratio reduction"):
        gap_verdict([study], RAW)
    files = write_gap_report(tmp_path, [study], {"fsn-k2": verdict}, title="toy")
    page = files.html.read_text()
    assert "Verdict" in page and "data:image/png;base64," in page and "b&amp;north" in page
    assert json.loads(files.json.read_text())["studies"][0]["seed"] == 0


def test_bad_parameters_are_refused() -> None:
    t = _clustered(1, identities=10)
    with pytest.raises(EvaluationError, match="at least 3"):
        study_gap(t, [], folds=2)
    with pytest.raises(EvaluationError, match="Unknown normalizer"):
        study_gap(t, [MethodSpec("x", "nope", 2)], folds=3)


def test_fit_shipped_normalizer_measures_its_in_sample_point() -> None:
    t = _clustered(2, identities=30)
    _, measured = fit_shipped_normalizer(
        t, model_id="toy", method="pairwise-fsn", clusters=2, target_fmr=1e-2
    )
    assert measured["measured_fmr"] <= 1e-2 and measured["clusters"] == 2
    assert round(measured["threshold"], 4) == measured["threshold"]
    assert measured["images"] == len(t.vectors)
    assert measured["identities"] == len(np.unique(t.identities))
