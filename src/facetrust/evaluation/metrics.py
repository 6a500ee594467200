"""Error rates of a verifier from distance scores.

Score direction: every function takes **distances** (Euclidean between
templates; lower is more similar) and calls a pair a match when
``distance <= threshold``. Names follow scikit-learn: ``*_rate`` is lower
is better. ``y_true`` is True for a mated pair (same identity) and False
for a non-mated (impostor) pair.

- FMR (false match rate): fraction of non-mated pairs with distance <= threshold.
- FNMR (false non-match rate): fraction of mated pairs with distance > threshold.
- TAR (true accept rate) = 1 - FNMR.

:func:`det_curve` and :func:`roc_curve` agree with
``sklearn.metrics.det_curve(y_true, -distances)`` and
``sklearn.metrics.roc_curve(y_true, -distances)`` with thresholds negated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError

FloatArray = npt.NDArray[np.float64]


def _split(y_true: npt.ArrayLike, distances: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    labels = np.asarray(y_true, dtype=bool).ravel()
    scores = np.asarray(distances, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise EvaluationError(
            f"y_true and distances must have the same length. Got {labels.size} and "
            f"{scores.size}."
        )
    if not np.all(np.isfinite(scores)):
        raise EvaluationError("distances must be finite numbers; found NaN or infinity.")
    return scores[labels], scores[~labels]


def _require(array: FloatArray, what: str) -> None:
    if array.size == 0:
        raise EvaluationError(f"Need at least one {what} pair to compute this rate; got none.")


def false_match_rate(y_true: npt.ArrayLike, distances: npt.ArrayLike, threshold: float) -> float:
    """FMR at ``threshold``: fraction of non-mated pairs with ``distance <= threshold``."""
    _, impostor = _split(y_true, distances)
    _require(impostor, "non-mated")
    return float(np.mean(impostor <= threshold))


def false_non_match_rate(
    y_true: npt.ArrayLike, distances: npt.ArrayLike, threshold: float
) -> float:
    """FNMR at ``threshold``: fraction of mated pairs with ``distance > threshold``."""
    genuine, _ = _split(y_true, distances)
    _require(genuine, "mated")
    return float(np.mean(genuine > threshold))


def det_curve(
    y_true: npt.ArrayLike, distances: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DET points: FMR and FNMR at every distinct distance used as threshold.

    Returns
    -------
    fmr, fnmr : ndarrays of shape (n_points,)
        FMR decreasing, FNMR increasing.
    thresholds : ndarray of shape (n_points,)
        Distance thresholds, decreasing (loosest first); the last may be
        ``-inf`` (nothing matches). Points run from the first threshold at
        which FNMR reaches 0 to the strictest one at which FMR reaches its
        minimum, as ``sklearn.metrics.det_curve(y_true, -distances)`` (1.9)
        returns them with thresholds negated.
    """
    fmr, tar, thresholds = roc_curve(y_true, distances)
    first = int(np.searchsorted(fmr, fmr[0], side="right")) - 1
    last = int(np.searchsorted(tar, tar[-1])) + 1
    keep = slice(first, last)
    return fmr[keep][::-1], 1.0 - tar[keep][::-1], thresholds[keep][::-1]


def _roc_points(
    y_true: npt.ArrayLike, distances: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """FMR and TAR at each distinct distance, thresholds increasing (strict to loose)."""
    genuine, impostor = _split(y_true, distances)
    _require(genuine, "mated")
    _require(impostor, "non-mated")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    fmr = np.searchsorted(np.sort(impostor), thresholds, side="right") / impostor.size
    tar = np.searchsorted(np.sort(genuine), thresholds, side="right") / genuine.size
    return fmr, tar, thresholds


def roc_curve(
    y_true: npt.ArrayLike, distances: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC points: FMR and TAR at every distinct distance threshold.

    Returns
    -------
    fmr, tar, thresholds : ndarrays of shape (n_thresholds + 1,)
        Thresholds in increasing distance (strictest first), starting with
        ``-inf`` (nothing matches: FMR = TAR = 0), like scikit-learn's
        ``roc_curve(y_true, -distances, drop_intermediate=False)``.
    """
    fmr, tar, thresholds = _roc_points(y_true, distances)
    return (
        np.concatenate([[0.0], fmr]),
        np.concatenate([[0.0], tar]),
        np.concatenate([[-np.inf], thresholds]),
    )


def equal_error_rate(y_true: npt.ArrayLike, distances: npt.ArrayLike) -> tuple[float, float]:
    """The equal error rate and the distance threshold where FMR and FNMR cross.

    FMR rises and FNMR falls as the threshold grows; the EER is read where
    they cross, interpolating linearly between the two thresholds that
    bracket the crossing.

    Returns
    -------
    eer : float
        In [0, 1]; lower is better.
    threshold : float
        Distance at the crossing.
    """
    fmr, tar, thresholds = _roc_points(y_true, distances)
    fnmr = 1.0 - tar
    # Prepend the point below every distance: nothing matches.
    fmr = np.concatenate([[0.0], fmr])
    fnmr = np.concatenate([[1.0], fnmr])
    lower = np.concatenate([[thresholds[0] - 1e-9], thresholds])
    diff = fnmr - fmr  # decreasing: starts at 1, ends at <= 0
    index = int(np.flatnonzero(diff <= 0)[0])
    if diff[index] == 0 or index == 0:
        return float(fmr[index]), float(lower[index])
    d0, d1 = diff[index - 1], diff[index]
    w = d0 / (d0 - d1)
    eer = fmr[index - 1] + w * (fmr[index] - fmr[index - 1])
    threshold = lower[index - 1] + w * (lower[index] - lower[index - 1])
    return float(eer), float(threshold)


@dataclass(frozen=True)
class ThresholdAtRate:
    """The loosest threshold whose measured FMR stays at or under a target.

    Attributes
    ----------
    target_fmr : float
    threshold : float
        Largest distance still called a match.
    measured_fmr : float
        FMR at ``threshold`` on the non-mated pairs (<= target).
    false_matches : int
        Non-mated pairs with distance <= threshold.
    n_impostor : int
        Non-mated pairs the threshold was set on.
    supported : bool
        Whether ``n_impostor`` pairs can show an FMR this low: by the rule of
        three, zero false matches in N pairs bounds the FMR at 3/N with 95%
        confidence and no lower, so a target below 3/N is not supported.
    """

    target_fmr: float
    threshold: float
    measured_fmr: float
    false_matches: int
    n_impostor: int
    supported: bool

    @property
    def lowest_supported_fmr(self) -> float:
        """3/N: the lowest FMR that ``n_impostor`` pairs can support (rule of three)."""
        return rule_of_three(self.n_impostor)


def rule_of_three(n: int) -> float:
    """Upper 95% bound on a rate when 0 events were seen in ``n`` trials: ``3 / n``."""
    if n <= 0:
        raise EvaluationError(f"The rule of three needs at least one trial. Got n={n}.")
    return 3.0 / n


def threshold_at_fmr(impostor_distances: npt.ArrayLike, target_fmr: float) -> ThresholdAtRate:
    """The largest distance threshold whose FMR on ``impostor_distances`` is <= ``target_fmr``.

    With N non-mated distances sorted ascending, ``k = floor(target * N)``
    false matches are allowed, so the threshold sits just below the
    ``(k+1)``-th smallest distance (ties there are excluded too).

    Parameters
    ----------
    impostor_distances : array of shape (n,)
        Distances of non-mated pairs.
    target_fmr : float in (0, 1)
    """
    if not 0.0 < target_fmr < 1.0:
        raise EvaluationError(f"The target FMR must be in (0, 1). Got {target_fmr}.")
    scores = np.sort(np.asarray(impostor_distances, dtype=np.float64).ravel())
    _require(scores, "non-mated")
    n = scores.size
    allowed = int(np.floor(target_fmr * n + 1e-9))
    # Just below the first distance that would be one false match too many.
    threshold = float(scores[-1] if allowed >= n else np.nextafter(scores[allowed], -np.inf))
    false_matches = int(np.searchsorted(scores, threshold, side="right"))
    return ThresholdAtRate(
        target_fmr=target_fmr,
        threshold=threshold,
        measured_fmr=false_matches / n,
        false_matches=false_matches,
        n_impostor=n,
        supported=target_fmr >= rule_of_three(n),
    )


def true_accept_rate_at_fmr(
    y_true: npt.ArrayLike, distances: npt.ArrayLike, target_fmr: float
) -> tuple[float, ThresholdAtRate]:
    """TAR (1 - FNMR; higher is better) at the threshold where FMR <= ``target_fmr``."""
    genuine, impostor = _split(y_true, distances)
    _require(genuine, "mated")
    point = threshold_at_fmr(impostor, target_fmr)
    return float(np.mean(genuine <= point.threshold)), point
