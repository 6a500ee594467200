"""Bootstrap confidence intervals for error rates, resampling identities.

Pairs that share an identity are not independent (one hard-to-match person
gives many false non-matches), so the unit of resampling is the identity,
not the pair. Each replicate draws identities with replacement; a pair's
weight is the number of times its identity was drawn (mated pairs) or the
product of its two identities' draws (non-mated pairs). Seeded, so a report
is reproducible.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError

#: Bootstrap replicates by default.
DEFAULT_REPLICATES = 1000


def identity_bootstrap_ci(
    errors: npt.ArrayLike,
    identity_a: npt.ArrayLike,
    identity_b: npt.ArrayLike | None = None,
    *,
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of an error rate, resampling identities.

    Parameters
    ----------
    errors : array of bool, shape (n_pairs,)
        True where the pair was decided wrongly (a false match among non-mated
        pairs, a false non-match among mated pairs).
    identity_a : array of shape (n_pairs,)
        Identity of each pair (mated) or of its first image (non-mated).
    identity_b : array of shape (n_pairs,), optional
        Identity of the second image of non-mated pairs.
    replicates : int
    confidence : float in (0, 1)
    seed : int

    Returns
    -------
    (low, high) : floats in [0, 1]
    """
    err = np.asarray(errors, dtype=bool).ravel()
    if err.size == 0:
        raise EvaluationError("Cannot bootstrap an error rate from zero pairs.")
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(f"The confidence must be in (0, 1). Got {confidence}.")
    a_names = np.asarray(identity_a).ravel()
    names = a_names if identity_b is None else np.concatenate([a_names, np.asarray(identity_b)])
    uniques, codes = np.unique(names, return_inverse=True)
    a = codes[: err.size]
    b = None if identity_b is None else codes[err.size :]
    # Aggregate pairs that share their identities: the weight only depends on them.
    key = a if b is None else a * uniques.size + b
    keys, inverse = np.unique(key, return_inverse=True)
    totals = np.bincount(inverse).astype(np.float64)
    wrong = np.bincount(inverse, weights=err.astype(np.float64))
    key_a = keys if b is None else keys // uniques.size
    key_b = None if b is None else keys % uniques.size
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(replicates):
        draws = np.bincount(rng.integers(0, uniques.size, uniques.size), minlength=uniques.size)
        weight = draws[key_a] if key_b is None else draws[key_a] * draws[key_b]
        den = float(weight @ totals)
        if den > 0:
            rates.append(float(weight @ wrong) / den)
    if not rates:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return float(low), float(high)
