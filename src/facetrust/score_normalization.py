"""Unsupervised post-comparison score normalization to narrow demographic gaps.

Two normalizers, both fitted once on a calibration set of templates with
identity labels (no demographic labels: they are never needed at run time,
and facetrust never predicts them), both applied to a *distance* after
comparison, so stored templates are untouched and an existing gallery keeps
working:

- :class:`FairScoreNormalizer` — fair score normalization (Terhörst, Kolf,
  Damer, Kirchbuchner, Kuijper, "Post-comparison mitigation of demographic
  bias in face recognition using fair score normalization", Pattern
  Recognition Letters 2020). Templates are clustered with k-means; each
  cluster gets the distance threshold at which *its own* impostor pairs reach
  the target false-match rate; a pair's distance is shifted by how far its
  two clusters' thresholds lie from the global one:
  ``d' = d - (delta[c_a] + delta[c_b]) / 2`` with ``delta[c] = thr[c] - thr_global``.
  A cluster whose impostors lie close together (a low threshold) has its
  distances raised, so it stops producing more false matches than the rest.
- :class:`ClusterZNormalizer` — per-cluster z-normalisation of impostor
  distances: ``d' = mu_g + sigma_g * (d - (mu_a + mu_b) / 2) / ((sigma_a + sigma_b) / 2)``.
- :class:`PairwiseFairScoreNormalizer` — fair score normalization with one
  threshold per *pair* of clusters instead of the mean of two per-cluster
  ones: ``d' = d - (thr[c_a, c_b] - thr_global)``, where ``thr[c_a, c_b]`` is
  measured on the impostor pairs between clusters ``c_a`` and ``c_b``. Most
  impostor pairs of a demographic group join two *different* clusters, whose
  false-match rate the per-cluster mean does not control; this does.

Distances stay distances: lower is more similar, match when ``d' <= threshold``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from .errors import InvalidParameter

FloatArray = npt.NDArray[np.float64]

#: Fewer impostor pairs than this in a cluster and its own threshold is not
#: trusted: the cluster falls back to the global one (no shift).
MIN_IMPOSTOR_PAIRS = 200


def kmeans(points: npt.ArrayLike, k: int, *, seed: int = 0, iterations: int = 50) -> FloatArray:
    """Cluster centres of shape (k, dim) by Lloyd's k-means with k-means++ seeding."""
    data = np.asarray(points, dtype=np.float64)
    if not 1 <= k <= len(data):
        raise InvalidParameter(
            f"k-means needs 1 <= k <= number of points ({len(data)}). Got k={k} instead."
        )
    rng = np.random.default_rng(seed)
    centres = [data[rng.integers(len(data))]]
    closest = np.sum((data - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        choice = rng.choice(len(data), p=closest / closest.sum()) if closest.sum() else 0
        centres.append(data[choice])
        closest = np.minimum(closest, np.sum((data - data[choice]) ** 2, axis=1))
    centre_array = np.array(centres)
    for _ in range(iterations):
        labels = assign_clusters(data, centre_array)
        moved = np.array(
            [
                data[labels == c].mean(axis=0) if np.any(labels == c) else centre_array[c]
                for c in range(k)
            ]
        )
        if np.allclose(moved, centre_array):
            break
        centre_array = moved
    return centre_array


def assign_clusters(points: npt.ArrayLike, centres: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Index of the nearest centre for each row of ``points``."""
    data = np.atleast_2d(np.asarray(points, dtype=np.float64))
    c = np.asarray(centres, dtype=np.float64)
    squared = (data**2).sum(1)[:, None] - 2 * data @ c.T + (c**2).sum(1)[None, :]
    labels: npt.NDArray[np.int64] = np.argmin(squared, axis=1).astype(np.int64)
    return labels


def impostor_distances(
    embeddings: npt.ArrayLike, identities: npt.ArrayLike, rows: npt.ArrayLike | None = None
) -> FloatArray:
    """Distances of every pair of different identities among ``rows`` (all rows by default)."""
    x = np.asarray(embeddings, dtype=np.float64)
    ids = np.asarray(identities)
    index = np.arange(len(x)) if rows is None else np.asarray(rows)
    sub, sub_ids = x[index], ids[index]
    squared = (sub**2).sum(1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * sub @ sub.T, 0))
    upper = np.triu(np.ones((len(sub), len(sub)), dtype=bool), k=1)
    different = sub_ids[:, None] != sub_ids[None, :]
    result: FloatArray = distances[upper & different]
    return result


def all_impostor_distances(
    embeddings: npt.ArrayLike, identities: npt.ArrayLike, *, block: int = 1024
) -> npt.NDArray[np.float32]:
    """Distances (float32) of every pair of different identities, computed in row blocks.

    The same values as :func:`impostor_distances` over all rows, without an
    (n, n) float64 matrix and its masks in memory at once.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    parts = [d for _, _, d in _impostor_blocks(x, np.asarray(identities), block)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _impostor_blocks(
    x: FloatArray, ids: npt.NDArray[Any], block: int
) -> Iterator[tuple[int, npt.NDArray[np.bool_], npt.NDArray[np.float32]]]:
    """Per block of rows ``start:start + block``: ``start``, the mask of its impostor
    pairs over columns ``start:`` (each unordered pair once), and their distances."""
    squared = (x**2).sum(1)
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        d2 = squared[start:stop, None] + squared[None, start:] - 2 * x[start:stop] @ x[start:].T
        keep = (ids[start:stop, None] != ids[None, start:]) & (
            np.arange(start, stop)[:, None] < np.arange(start, len(x))[None, :]
        )
        yield start, keep, np.sqrt(np.maximum(d2[keep], 0)).astype(np.float32)


def threshold_at_fmr(impostor: npt.ArrayLike, target_fmr: float) -> float:
    """Largest distance at which at most ``target_fmr`` of ``impostor`` distances fall."""
    values = np.sort(np.asarray(impostor, dtype=np.float64))
    allowed = int(np.floor(target_fmr * len(values)))
    if allowed == 0:
        return float(np.nextafter(values[0], -np.inf))
    return float(np.nextafter(values[allowed], -np.inf))


@dataclass(frozen=True)
class _ClusterNormalizer:
    """Shared fitting and storage: centres and one statistic vector per cluster."""

    kind: ClassVar[str] = ""
    centres: FloatArray
    model_id: str
    target_fmr: float
    clusters_fitted: int

    def rotated(self, rotation: npt.ArrayLike) -> Self:
        """The same normalizer for templates stored as ``rotation @ template``.

        Galleries keep templates under a keyed orthogonal rotation (template
        protection); rotating the centres the same way keeps every cluster
        assignment, and so every normalized distance, unchanged.
        """
        matrix = np.asarray(rotation, dtype=np.float64)
        return dataclasses.replace(self, centres=self.centres @ matrix.T)

    def clusters_of(self, embeddings: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return assign_clusters(embeddings, self.centres)

    def normalize(
        self, distances: npt.ArrayLike, embeddings_a: npt.ArrayLike, embeddings_b: npt.ArrayLike
    ) -> FloatArray:
        """Normalized distances of pairs (a[i], b[i]); broadcasting a single a or b works."""
        return self.normalize_assigned(
            distances, self.clusters_of(embeddings_a), self.clusters_of(embeddings_b)
        )

    def normalize_assigned(
        self, distances: npt.ArrayLike, clusters_a: npt.ArrayLike, clusters_b: npt.ArrayLike
    ) -> FloatArray:
        """Normalized distances of pairs whose templates' clusters are already known.

        ``clusters_a``/``clusters_b`` come from :meth:`clusters_of`; this is how
        millions of pairs among a few thousand templates are normalized without
        repeating the cluster assignment per pair.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted normalizer as JSON (atomically)."""
        target = Path(path)
        temporary = target.with_suffix(target.suffix + ".tmp")
        temporary.write_text(json.dumps(self.to_dict()))
        os.replace(temporary, target)


@dataclass(frozen=True)
class FairScoreNormalizer(_ClusterNormalizer):
    """Fair score normalization (Terhörst et al. 2020) for distances.

    Attributes
    ----------
    centres : ndarray of shape (k, dim)
    deltas : ndarray of shape (k,)
        ``thr[c] - thr_global`` per cluster (0 for clusters with too few impostor pairs).
    global_threshold : float
        Distance threshold at ``target_fmr`` over the whole calibration set.
    """

    kind: ClassVar[str] = "fair-score-normalization"
    deltas: FloatArray
    global_threshold: float

    @classmethod
    def fit(
        cls,
        embeddings: npt.ArrayLike,
        identities: npt.ArrayLike,
        *,
        model_id: str,
        clusters: int = 20,
        target_fmr: float = 1e-3,
        seed: int = 0,
    ) -> FairScoreNormalizer:
        """Fit on templates (n, dim) with one identity label per row."""
        centres, everything, per_cluster = _clustered_impostors(
            embeddings, identities, clusters, seed
        )
        global_threshold = threshold_at_fmr(everything, target_fmr)
        deltas = np.zeros(clusters)
        fitted = 0
        for c, impostor in enumerate(per_cluster):
            if len(impostor) >= max(MIN_IMPOSTOR_PAIRS, int(np.ceil(3 / target_fmr))):
                deltas[c] = threshold_at_fmr(impostor, target_fmr) - global_threshold
                fitted += 1
        return cls(centres, model_id, target_fmr, fitted, deltas, global_threshold)

    def normalize_assigned(
        self, distances: npt.ArrayLike, clusters_a: npt.ArrayLike, clusters_b: npt.ArrayLike
    ) -> FloatArray:
        shift = (self.deltas[np.asarray(clusters_a)] + self.deltas[np.asarray(clusters_b)]) / 2
        result: FloatArray = np.asarray(distances, dtype=np.float64) - shift
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "target_fmr": self.target_fmr,
            "clusters_fitted": self.clusters_fitted,
            "global_threshold": self.global_threshold,
            "centres": self.centres.tolist(),
            "deltas": self.deltas.tolist(),
        }


@dataclass(frozen=True)
class ClusterZNormalizer(_ClusterNormalizer):
    """Per-cluster z-normalisation of impostor distances, mapped back to the global scale."""

    kind: ClassVar[str] = "cluster-z-normalization"
    means: FloatArray
    stds: FloatArray
    global_mean: float
    global_std: float

    @classmethod
    def fit(
        cls,
        embeddings: npt.ArrayLike,
        identities: npt.ArrayLike,
        *,
        model_id: str,
        clusters: int = 20,
        target_fmr: float = 1e-3,
        seed: int = 0,
    ) -> ClusterZNormalizer:
        """Fit on templates (n, dim) with one identity label per row."""
        centres, everything, per_cluster = _clustered_impostors(
            embeddings, identities, clusters, seed
        )
        mean, std = float(everything.mean()), float(everything.std())
        means, stds = np.full(clusters, mean), np.full(clusters, std)
        fitted = 0
        for c, impostor in enumerate(per_cluster):
            if len(impostor) >= MIN_IMPOSTOR_PAIRS:
                means[c], stds[c] = impostor.mean(), max(impostor.std(), 1e-6)
                fitted += 1
        return cls(centres, model_id, target_fmr, fitted, means, stds, mean, std)

    def normalize_assigned(
        self, distances: npt.ArrayLike, clusters_a: npt.ArrayLike, clusters_b: npt.ArrayLike
    ) -> FloatArray:
        ca, cb = np.asarray(clusters_a), np.asarray(clusters_b)
        mu = (self.means[ca] + self.means[cb]) / 2
        sigma = (self.stds[ca] + self.stds[cb]) / 2
        z = (np.asarray(distances, dtype=np.float64) - mu) / sigma
        result: FloatArray = self.global_mean + self.global_std * z
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "target_fmr": self.target_fmr,
            "clusters_fitted": self.clusters_fitted,
            "global_mean": self.global_mean,
            "global_std": self.global_std,
            "centres": self.centres.tolist(),
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
        }


@dataclass(frozen=True)
class PairwiseFairScoreNormalizer(_ClusterNormalizer):
    """Fair score normalization with one threshold per pair of clusters.

    Attributes
    ----------
    centres : ndarray of shape (k, dim)
    pair_deltas : ndarray of shape (k, k), symmetric
        ``thr[a, b] - thr_global``: the distance threshold at ``target_fmr``
        among impostor pairs with one template in cluster ``a`` and one in
        ``b``, less the global one. A pair of clusters with too few impostor
        pairs falls back to the mean of the two clusters' own deltas (plain
        fair score normalization), or 0 when those are missing too.
    global_threshold : float
    """

    kind: ClassVar[str] = "pairwise-fair-score-normalization"
    pair_deltas: FloatArray
    global_threshold: float

    @classmethod
    def fit(
        cls,
        embeddings: npt.ArrayLike,
        identities: npt.ArrayLike,
        *,
        model_id: str,
        clusters: int = 20,
        target_fmr: float = 1e-3,
        seed: int = 0,
    ) -> PairwiseFairScoreNormalizer:
        """Fit on templates (n, dim) with one identity label per row."""
        x, ids = _check_fit_input(embeddings, identities, clusters)
        centres = kmeans(x, clusters, seed=seed)
        labels = assign_clusters(x, centres)
        cells, distances = _impostor_cells(x, ids, labels, clusters)
        global_threshold = threshold_at_fmr(distances, target_fmr)
        needed = max(MIN_IMPOSTOR_PAIRS, int(np.ceil(3 / target_fmr)))
        order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=clusters * clusters)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        thresholds = np.full(clusters * clusters, np.nan)
        for cell in np.flatnonzero(counts >= needed):
            segment = distances[order[starts[cell] : starts[cell] + counts[cell]]]
            thresholds[cell] = threshold_at_fmr(segment, target_fmr)
        upper = thresholds.reshape(clusters, clusters) - global_threshold
        table = np.where(np.isnan(upper), upper.T, upper)
        own = np.diag(table).copy()
        own[np.isnan(own)] = 0.0
        fallback = (own[:, None] + own[None, :]) / 2
        fitted = int(np.isfinite(table[np.triu_indices(clusters)]).sum())
        deltas = np.where(np.isnan(table), fallback, table)
        return cls(centres, model_id, target_fmr, fitted, deltas, global_threshold)

    def normalize_assigned(
        self, distances: npt.ArrayLike, clusters_a: npt.ArrayLike, clusters_b: npt.ArrayLike
    ) -> FloatArray:
        shift = self.pair_deltas[np.asarray(clusters_a), np.asarray(clusters_b)]
        result: FloatArray = np.asarray(distances, dtype=np.float64) - shift
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "target_fmr": self.target_fmr,
            "clusters_fitted": self.clusters_fitted,
            "global_threshold": self.global_threshold,
            "centres": self.centres.tolist(),
            "pair_deltas": self.pair_deltas.tolist(),
        }


ScoreNormalizer = FairScoreNormalizer | ClusterZNormalizer | PairwiseFairScoreNormalizer


def load_normalizer(path: str | os.PathLike[str]) -> ScoreNormalizer:
    """Read a normalizer written by ``save``."""
    data = json.loads(Path(path).read_text())
    centres = np.asarray(data["centres"], dtype=np.float64)
    common = (centres, data["model_id"], data["target_fmr"], data["clusters_fitted"])
    if data.get("kind") == FairScoreNormalizer.kind:
        return FairScoreNormalizer(
            *common, np.asarray(data["deltas"], dtype=np.float64), data["global_threshold"]
        )
    if data.get("kind") == ClusterZNormalizer.kind:
        return ClusterZNormalizer(
            *common,
            np.asarray(data["means"], dtype=np.float64),
            np.asarray(data["stds"], dtype=np.float64),
            data["global_mean"],
            data["global_std"],
        )
    if data.get("kind") == PairwiseFairScoreNormalizer.kind:
        return PairwiseFairScoreNormalizer(
            *common, np.asarray(data["pair_deltas"], dtype=np.float64), data["global_threshold"]
        )
    raise InvalidParameter(
        f"{os.fspath(path)!r} is not a facetrust score normalizer (kind {data.get('kind')!r})."
    )


def _clustered_impostors(
    embeddings: npt.ArrayLike, identities: npt.ArrayLike, clusters: int, seed: int
) -> tuple[FloatArray, FloatArray, list[FloatArray]]:
    """k-means centres, every impostor distance, and each cluster's own impostor distances."""
    x, ids = _check_fit_input(embeddings, identities, clusters)
    centres = kmeans(x, clusters, seed=seed)
    labels = assign_clusters(x, centres)
    everything = np.asarray(all_impostor_distances(x, ids), dtype=np.float64)
    per_cluster = [impostor_distances(x, ids, np.flatnonzero(labels == c)) for c in range(clusters)]
    return centres, everything, per_cluster


def _impostor_cells(
    x: FloatArray, ids: npt.NDArray[Any], labels: npt.NDArray[np.int64], clusters: int,
    *, block: int = 1024,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Cell ``min(c_a, c_b) * k + max(c_a, c_b)`` and distance (float32) of every impostor pair."""
    cells, distances = [], []
    for start, keep, found in _impostor_blocks(x, ids, block):
        stop = start + len(keep)
        la = np.broadcast_to(labels[start:stop, None], keep.shape)[keep]
        lb = np.broadcast_to(labels[None, start:], keep.shape)[keep]
        cells.append(np.minimum(la, lb) * clusters + np.maximum(la, lb))
        distances.append(found)
    if not cells:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(cells).astype(np.int64), np.concatenate(distances)


def _check_fit_input(
    embeddings: npt.ArrayLike, identities: npt.ArrayLike, clusters: int
) -> tuple[FloatArray, npt.NDArray[Any]]:
    x = np.asarray(embeddings, dtype=np.float64)
    ids = np.asarray(identities)
    if x.ndim != 2 or len(x) != len(ids):
        raise InvalidParameter(
            "Expected embeddings of shape (n, dim) and n identity labels. "
            f"Got {x.shape} and {ids.shape} instead."
        )
    if clusters < 1 or clusters > len(x):
        raise InvalidParameter(
            f"The 'clusters' parameter must be in [1, {len(x)}]. Got {clusters} instead."
        )
    return x, ids
