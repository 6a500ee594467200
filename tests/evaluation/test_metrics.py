"""Metrics against hand-computed values and against scikit-learn where they overlap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import det_curve as sk_det_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from facetrust.errors import EvaluationError
from facetrust.evaluation.metrics import (
    det_curve,
    equal_error_rate,
    false_match_rate,
    false_non_match_rate,
    roc_curve,
    rule_of_three,
    threshold_at_fmr,
    true_accept_rate_at_fmr,
)

# Mated distances 0.1 0.4 0.5; non-mated 0.3 0.8 0.9.
Y = np.array([True, True, False, False, True, False])
D = np.array([0.1, 0.4, 0.3, 0.8, 0.5, 0.9])


def test_fmr_and_fnmr_at_a_threshold_match_hand_counts() -> None:
    # At 0.4: non-mated <= 0.4 is {0.3} -> 1/3; mated > 0.4 is {0.5} -> 1/3.
    assert false_match_rate(Y, D, 0.4) == pytest.approx(1 / 3)
    assert false_non_match_rate(Y, D, 0.4) == pytest.approx(1 / 3)
    # A distance equal to the threshold is a match.
    assert false_match_rate(Y, D, 0.3) == pytest.approx(1 / 3)
    assert false_match_rate(Y, D, 0.29) == 0.0
    assert false_non_match_rate(Y, D, 0.5) == 0.0


def test_equal_error_rate_where_the_rates_cross() -> None:
    # At 0.3: FMR 1/3, FNMR 2/3; at 0.4 both 1/3.
    eer, threshold = equal_error_rate(Y, D)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4)


def test_equal_error_rate_interpolates_between_thresholds() -> None:
    y = np.array([True, False, True, False])
    d = np.array([0.2, 0.1, 0.4, 0.3])
    # thresholds 0.1: FMR .5 FNMR 1 ; 0.2: FMR .5 FNMR .5 -> crossing exactly at 0.2.
    assert equal_error_rate(y, d)[0] == pytest.approx(0.5)
    # Perfect separation: EER 0.
    assert equal_error_rate([True, False], [0.1, 0.9])[0] == 0.0


def test_threshold_at_target_fmr() -> None:
    impostor = np.array([0.5, 0.7, 0.2, 0.9, 0.6, 0.8, 0.65, 0.75, 0.85, 0.95])
    # 10 pairs, target 0.1: one false match allowed -> just below the 2nd smallest (0.5).
    point = threshold_at_fmr(impostor, 0.1)
    assert 0.2 <= point.threshold < 0.5
    assert point.false_matches == 1
    assert point.measured_fmr == pytest.approx(0.1)
    # target 0.05: none allowed -> below the smallest.
    strict = threshold_at_fmr(impostor, 0.05)
    assert strict.threshold < 0.2 and strict.false_matches == 0


def test_rule_of_three_decides_support() -> None:
    assert rule_of_three(3000) == pytest.approx(1e-3)
    impostor = np.linspace(0.3, 1.2, 3000)
    assert threshold_at_fmr(impostor, 1e-3).supported
    assert not threshold_at_fmr(impostor, 1e-4).supported
    assert threshold_at_fmr(impostor, 1e-4).lowest_supported_fmr == pytest.approx(1e-3)


def test_tar_at_fmr() -> None:
    tar, point = true_accept_rate_at_fmr(Y, D, 0.34)
    # One false match allowed of 3 -> threshold just below 0.8: all mated accepted.
    assert tar == 1.0 and point.false_matches == 1


@pytest.mark.parametrize("seed", range(5))
def test_det_curve_agrees_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.5
    d = np.round(rng.random(60), 1 if seed % 2 else 6)  # with and without ties
    fmr, fnmr, thresholds = det_curve(y, d)
    sk_fpr, sk_fnr, sk_thresholds = sk_det_curve(y, -d)
    finite = np.isfinite(sk_thresholds)
    ours = np.isfinite(thresholds)
    np.testing.assert_allclose(fmr[ours], sk_fpr[finite])
    np.testing.assert_allclose(fnmr[ours], sk_fnr[finite])
    np.testing.assert_allclose(thresholds[ours], -sk_thresholds[finite])


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_agrees_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(50) < 0.4
    d = np.round(rng.random(50), 1 if seed % 2 else 6)
    fmr, tar, thresholds = roc_curve(y, d)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(y, -d, drop_intermediate=False)
    np.testing.assert_allclose(fmr, sk_fpr)
    np.testing.assert_allclose(tar, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], -sk_thresholds[1:])


def test_bad_metric_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="same length"):
        false_match_rate([True, False], [0.1], 0.5)
    with pytest.raises(EvaluationError, match="non-mated"):
        false_match_rate([True, True], [0.1, 0.2], 0.5)
    with pytest.raises(EvaluationError, match=r"\(0, 1\)"):
        threshold_at_fmr([0.1, 0.2], 1.5)
    with pytest.raises(EvaluationError, match="finite"):
        equal_error_rate([True, False], [0.1, float("nan")])
