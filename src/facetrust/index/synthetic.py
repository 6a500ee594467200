"""Synthetic templates that behave like real ones, for testing indexes at scale.

Uniform random vectors are the wrong test data for an approximate index: real
descriptors are clustered (by identity, and along a few dominant directions),
random ones are not, and HNSW recall on random vectors says little about recall
on faces. :class:`TemplateModel` is a two-level Gaussian model fitted to real
templates of labelled identities:

* identity centres ~ N(mu, Sigma_between)
* a template of an identity = its centre + s * N(0, Sigma_within), with a
  per-template log-normal scale s (E[s^2] = 1)

``Sigma_within`` is the pooled covariance of templates around their identity's
mean; ``Sigma_between`` is the covariance of identity means less the part of it
that within-identity noise explains (``mean(1/n_i) * Sigma_within``), clipped
to be positive semi-definite. A single Gaussian gives every mated pair almost
the same distance (in 128 dimensions the norm of Gaussian noise concentrates),
while real photos vary in pose, light and age; the scale s restores that
spread: its log-standard-deviation is fitted so the synthetic mated distances
match the real ones (smallest Kolmogorov-Smirnov statistic on a grid).
:func:`distance_report` checks a fitted model
against the real data: mated and non-mated distance distributions (mean, std,
quantiles, two-sample Kolmogorov-Smirnov statistic) and the false-match and
false-non-match rates at a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidParameter

FloatMatrix = npt.NDArray[np.float32]
Float64Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TemplateModel:
    """A fitted two-level Gaussian model of templates (see module docstring).

    Attributes
    ----------
    mean_ : array of shape (dim,)
    between_ : array of shape (dim, dim)
        Covariance of identity centres.
    within_ : array of shape (dim, dim)
        Covariance of an identity's templates around its centre.
    n_identities_, n_templates_ : int
        Size of the data it was fitted to.
    scale_sigma_ : float
        Log-standard-deviation of the per-template noise scale (0: no spread).
    """

    mean_: Float64Matrix
    between_: Float64Matrix
    within_: Float64Matrix
    n_identities_: int
    n_templates_: int
    scale_sigma_: float = 0.0

    @classmethod
    def fit(cls, vectors: npt.ArrayLike, labels: npt.ArrayLike) -> TemplateModel:
        """Fit to real templates ``vectors`` (n, dim) of identities ``labels`` (n,).

        Identities with a single template count toward the centres only.

        Raises
        ------
        InvalidParameter
            Fewer than two identities with two or more templates.
        """
        x = np.asarray(vectors, dtype=np.float64)
        y = np.asarray(labels).reshape(-1)
        if x.ndim != 2 or len(x) != len(y):
            raise InvalidParameter(
                f"fit needs vectors of shape (n, dim) and labels of shape (n,). "
                f"Got {x.shape} and {y.shape} instead."
            )
        names, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        if int((counts >= 2).sum()) < 2:
            raise InvalidParameter(
                "fit needs at least two identities with two or more templates each. "
                f"Got {int((counts >= 2).sum())}."
            )
        means = np.zeros((len(names), x.shape[1]))
        np.add.at(means, inverse, x)
        means /= counts[:, None]
        residuals = x - means[inverse]
        several = counts[inverse] >= 2
        within = residuals[several].T @ residuals[several]
        within /= several.sum() - int((counts >= 2).sum())
        centre = means.mean(axis=0)
        spread = np.cov(means, rowvar=False) - np.mean(1.0 / counts) * within
        model = cls(
            mean_=centre,
            between_=_nearest_psd(spread),
            within_=_nearest_psd(within),
            n_identities_=len(names),
            n_templates_=len(x),
        )
        pairs = _mated_pairs(y, 5000, np.random.default_rng(0))
        real = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
        best = min(
            np.linspace(0.0, 0.8, 17),
            key=lambda sigma: ks_statistic(
                real, model.with_scale(sigma).sample_mated_distances(4000, seed=1)
            ),
        )
        return model.with_scale(float(best))

    def with_scale(self, sigma: float) -> TemplateModel:
        """The same model with the scale spread ``sigma``."""
        return replace(self, scale_sigma_=float(sigma))

    def sample_mated_distances(self, n: int, seed: int) -> Float64Matrix:
        """Distances of ``n`` synthetic mated pairs, shape (n,)."""
        rng = np.random.default_rng(seed)
        centres = self.sample_centres(n, rng)
        gap = self.sample_templates(centres, rng) - self.sample_templates(centres, rng)
        result: Float64Matrix = np.linalg.norm(gap.astype(np.float64), axis=1)
        return result

    @property
    def dim(self) -> int:
        return int(self.mean_.shape[0])

    def sample_centres(self, n: int, rng: np.random.Generator) -> FloatMatrix:
        """``n`` new identity centres, shape (n, dim) float32."""
        return _sample(self.mean_, self.between_, n, rng)

    def sample_templates(self, centres: npt.ArrayLike, rng: np.random.Generator) -> FloatMatrix:
        """One fresh template of each identity in ``centres`` (m, dim): shape (m, dim) float32."""
        base = np.asarray(centres, dtype=np.float32)
        noise = _sample(np.zeros(self.dim), self.within_, len(base), rng)
        if self.scale_sigma_ > 0:
            sigma = self.scale_sigma_
            noise *= np.exp(sigma * rng.standard_normal(len(base)) - sigma**2).astype(np.float32)[
                :, None
            ]
        return (base + noise).astype(np.float32)


def distance_report(
    model: TemplateModel,
    vectors: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    threshold: float,
    pairs: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the model's mated/non-mated distances with the real data's.

    Parameters
    ----------
    model : TemplateModel
    vectors, labels : real templates (n, dim) and their identities (n,)
    threshold : float
        Decision threshold for the FMR/FNMR comparison (an operating point's).
    pairs : int
        Non-mated pairs drawn on each side; mated pairs are all real ones (up to
        ``pairs``) and as many synthetic.

    Returns
    -------
    dict
        ``{"mated": {...}, "non_mated": {...}, "fmr": {...}, "fnmr": {...}}`` where each
        distribution entry has real and synthetic mean, std, quantiles and the KS statistic.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    mated_pairs = _mated_pairs(y, pairs, rng)
    real_mated = np.linalg.norm(x[mated_pairs[:, 0]] - x[mated_pairs[:, 1]], axis=1)
    a, b = rng.integers(0, len(x), (2, pairs * 2))
    different = y[a] != y[b]
    a, b = a[different][:pairs], b[different][:pairs]
    real_non_mated = np.linalg.norm(x[a] - x[b], axis=1)

    centres = model.sample_centres(max(len(real_mated), pairs), rng)
    synthetic_mated = np.linalg.norm(
        model.sample_templates(centres[: len(real_mated)], rng)
        - model.sample_templates(centres[: len(real_mated)], rng),
        axis=1,
    )
    others = model.sample_centres(pairs, rng)
    synthetic_non_mated = np.linalg.norm(
        model.sample_templates(centres[:pairs], rng) - model.sample_templates(others, rng), axis=1
    )
    return {
        "threshold": threshold,
        "mated": _compare(real_mated, synthetic_mated),
        "non_mated": _compare(real_non_mated, synthetic_non_mated),
        "fmr": {
            "real": float(np.mean(real_non_mated <= threshold)),
            "synthetic": float(np.mean(synthetic_non_mated <= threshold)),
        },
        "fnmr": {
            "real": float(np.mean(real_mated > threshold)),
            "synthetic": float(np.mean(synthetic_mated > threshold)),
        },
    }


def _mated_pairs(
    labels: npt.NDArray[Any], most: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Index pairs (m, 2) of templates of the same identity, at most ``most`` of them."""
    first, second = [], []
    for label in np.unique(labels):
        members = np.nonzero(labels == label)[0]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                first.append(members[i])
                second.append(members[j])
    pairs = np.asarray([first, second], dtype=np.int64).T.reshape(-1, 2)
    if len(pairs) > most:
        pairs = pairs[rng.choice(len(pairs), most, replace=False)]
    return pairs


def ks_statistic(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: largest gap between the empirical CDFs."""
    x = np.sort(np.asarray(a, dtype=np.float64))
    z = np.sort(np.asarray(b, dtype=np.float64))
    points = np.concatenate([x, z])
    gap = np.searchsorted(x, points, side="right") / len(x) - np.searchsorted(
        z, points, side="right"
    ) / len(z)
    return float(np.max(np.abs(gap)))


def _compare(real: Float64Matrix, synthetic: Float64Matrix) -> dict[str, Any]:
    quantiles = (0.01, 0.05, 0.5, 0.95, 0.99)

    def describe(values: Float64Matrix) -> dict[str, Any]:
        return {
            "n": len(values),
            "mean": round(float(values.mean()), 4),
            "std": round(float(values.std()), 4),
            "quantiles": {str(q): round(float(np.quantile(values, q)), 4) for q in quantiles},
        }

    return {
        "real": describe(real),
        "synthetic": describe(synthetic),
        "ks": round(ks_statistic(real, synthetic), 4),
    }


def _nearest_psd(matrix: Float64Matrix) -> Float64Matrix:
    symmetric = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(symmetric)
    result: Float64Matrix = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    return result


def _sample(
    mean: Float64Matrix, covariance: Float64Matrix, n: int, rng: np.random.Generator
) -> FloatMatrix:
    values, vectors = np.linalg.eigh(covariance)
    factor = vectors * np.sqrt(np.clip(values, 0.0, None))
    out = np.empty((n, len(mean)), dtype=np.float32)
    step = 65_536  # bounded temporary memory at a million samples
    for start in range(0, n, step):
        rows = min(step, n - start)
        z = rng.standard_normal((rows, len(mean)), dtype=np.float32)
        out[start : start + rows] = z @ factor.T.astype(np.float32) + mean.astype(np.float32)
    return out
