"""Approximate search by scanning compressed templates, then re-ranking exactly.

:class:`QuantizedIndex` keeps two copies of the gallery in the same row order:

* the float32 templates (an :class:`ExactIndex`: exact re-ranking, exact
  fallback, persistence), and
* a product-quantized copy: each 128-value template becomes 32 four-bit codes
  (16 bytes, one per four values). The codes are kept twice: in plain order
  (faiss ``IndexPQ``, which adds and removes correctly) and packed for SIMD
  scanning (faiss ``IndexPQFastScan``, rebuilt from the plain codes after a
  removal, 0.1 s at 1M templates). The fast scan reads a million templates in
  about 1 ms on one core.

A search scans every code for the ``rerank * k`` best candidates by the
compressed distance, ranks those by their exact distance from the float32
rows (recomputed in float64 for the winners) and keeps the ``k`` best. Every
returned distance is therefore exact; the approximation is only whether the
true neighbour made it into the candidates (the recall measured by
``benchmarks/bench_index.py``). Because the scan reads
every code, its latency barely varies from query to query, unlike a graph walk.

Why this and not an HNSW graph (measured in ``benchmarks/bench_index.py`` on
1M synthetic templates fitted to real dlib ones, this 2-core machine, idle):
HNSW (hnswlib, M=32) reaches recall@1 0.98 against exact search at a search
width of 512, 2.6 ms p50 / 3.8 ms p99, after an 8-minute build; this index
reaches recall@1 0.996 at 1.06 ms p50 / 1.48 ms p99 (30 candidates per
result), builds in about 30 s (3 s without the rotation), and removes a
template for real (its codes are deleted, not marked). 64 codes per template
(``subquantizers=64``) rank candidates better but scan 1.7x slower. HNSW stays
available as :class:`facetrust.index.HnswIndex`.

Rotation (OPQ): before quantization every template and query is multiplied by
a learnt orthogonal matrix (faiss ``OPQMatrix``) that spreads the variance
evenly over the code groups. With the same 16-byte codes the true nearest
neighbour is then among the 200 best candidates for 99.6% of mated queries at
1M, against 96.4% without (``benchmarks/bench_index.py``), so far fewer
candidates need re-ranking. The rotation is used only to find candidates;
distances are computed on the original templates.

Training: the quantizer's codebooks are learnt (k-means, seeded) from the
templates themselves once there are ``min_train`` of them; until then searches
are exact. The codebooks are re-learnt, and every template re-encoded, each time
the index grows to four times the number it was trained on, up to
``train_size`` training templates, so a gallery that starts small does not
keep codebooks fitted to its first few hundred faces.

Erasure: ``remove`` deletes the float32 rows (zeroing the freed memory) and the
codes at once; nothing of a removed template stays in the index or reaches a
saved file. (The packed copy is rebuilt rather than edited: in faiss 1.15 an
``add`` after ``remove_ids`` on a fast-scan index misplaces the new codes.)

Filtering (``allowed``) is exact, as in :class:`HnswIndex`: small allowed sets
are searched exactly; otherwise the scan over-fetches ``rerank * k / fraction``
candidates, drops the disallowed ones, re-ranks the rest, and widens (then goes
exact) for any query still short of ``k`` allowed results.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError, InvalidParameter
from .base import (
    AllowedIds,
    FloatMatrix,
    FoundPerQuery,
    IdArray,
    as_allowed,
    as_entries,
    as_queries,
    check_k,
    empty_results,
    is_allowed,
    widening_search,
)
from .exact import ExactBacked, ExactIndex, check_positive_ints

#: Bits per code: 4 is what faiss's SIMD fast scan is built for.
_BITS = 4
#: OPQ iterations: 20 reach 99.4% of the top-1 candidates that 50 do, in a third of the time.
_OPQ_ITERATIONS = 20
#: Fewer training templates than this learn no rotation (too little to estimate it).
_MIN_ROTATION_TRAIN = 256


def faiss_available() -> bool:
    """Whether the faiss library (package ``faiss-cpu``) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _rotate(vectors: FloatMatrix, rotation: FloatMatrix | None) -> FloatMatrix:
    """``vectors @ rotation.T`` as C-contiguous float32 (the vectors themselves without one)."""
    if rotation is None:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(vectors @ rotation.T, dtype=np.float32)


def _packed_for_scan(codes: Any) -> Any:
    """A fast-scan copy (faiss ``IndexPQFastScan``) of a trained faiss ``IndexPQ``'s codes."""
    import faiss

    return faiss.IndexPQFastScan(codes)


class QuantizedIndex(ExactBacked):
    """Compressed-template scan with exact re-ranking, exact filtering and real removal.

    Parameters
    ----------
    dim : int
    model_id : str
    subquantizers : int, optional
        Codes per template (default ``dim // 4``: one 4-bit code per four
        values). Fewer: a faster scan, coarser candidates.
    rotate : bool
        Learn an OPQ rotation before the codebooks (when at least 256 templates
        train them); better candidates for a training cost of about 15 s at
        65,536 training templates.
    rerank : int
        Candidates re-ranked exactly per result asked for (``rerank * k``).
        More: better recall, slower (the candidates' rows are gathered).
    min_train : int
        Templates needed before the quantizer is trained; searches are exact below.
    train_size : int
        Most templates the codebooks are learnt from.
    threads : int
        Threads for batch searches (0: every core). A single query always runs
        on one thread: spreading one 1 ms scan over threads costs more than it
        saves on a busy machine.
    exact_below_allowed, exact_below_fraction :
        A filtered search goes exact when the allowed set is smaller than either.
    max_fetch : int
        Most candidates one scan may ask for before the query goes exact.
    """

    kind = "quantized"

    def __init__(
        self,
        dim: int,
        model_id: str,
        *,
        subquantizers: int | None = None,
        rotate: bool = True,
        rerank: int = 30,
        min_train: int = 1024,
        train_size: int = 65_536,
        threads: int = 0,
        exact_below_allowed: int = 2_000,
        exact_below_fraction: float = 0.02,
        max_fetch: int = 65_536,
    ) -> None:
        self._exact = ExactIndex(dim, model_id)
        subquantizers = max(1, dim // 4) if subquantizers is None else subquantizers
        check_positive_ints(
            "QuantizedIndex",
            {
                "subquantizers": subquantizers,
                "rerank": rerank,
                "min_train": min_train,
                "train_size": train_size,
                "max_fetch": max_fetch,
            },
        )
        if dim % subquantizers:
            raise InvalidParameter(
                f"'subquantizers' must divide the dimension {dim}. Got {subquantizers}; "
                f"use {max(1, dim // 4)} (the default) or another divisor."
            )
        # faiss clusters each sub-vector into 16 centroids; fewer points than that cannot train.
        min_train = max(min_train, 2**_BITS)
        self.params: dict[str, Any] = {
            "subquantizers": subquantizers,
            "rotate": bool(rotate),
            "rerank": rerank,
            "min_train": min_train,
            "train_size": train_size,
            "threads": threads,
            "exact_below_allowed": exact_below_allowed,
            "exact_below_fraction": exact_below_fraction,
            "max_fetch": max_fetch,
        }
        self._codes: Any = None  # faiss.IndexPQ once trained: the codes in row order
        self._packed: Any = None  # faiss.IndexPQFastScan over the same codes, for scanning
        self._rotation: FloatMatrix | None = None  # (dim, dim) OPQ rotation, applied as x @ R.T
        self._trained_on = 0

    @property
    def is_trained(self) -> bool:
        """Whether searches scan codes (False: too few templates yet, searches are exact)."""
        return self._codes is not None

    @property
    def is_rotated(self) -> bool:
        """Whether an OPQ rotation was learnt (see the module docstring)."""
        return self._rotation is not None

    @property
    def trained_on(self) -> int:
        """How many templates the codebooks were learnt from (0: not trained yet)."""
        return self._trained_on

    def memory_bytes(self) -> int:
        """Bytes held by the float32 rows and the codes."""
        codes = 0
        if self._codes is not None:
            packed = int(self._packed.ntotal2 * self._packed.M2 // 2)
            codes = packed + self._codes.ntotal * self._codes.code_size
            codes += int(self._codes.pq.centroids.size()) * 4
        if self._rotation is not None:
            codes += self._rotation.nbytes
        return self._exact.memory_bytes() + codes

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates (see :meth:`ExactIndex.add`); (re)trains the quantizer when due."""
        new_ids, new_vectors = as_entries(ids, vectors, self.dim)
        if len(new_ids) == 0:
            return
        self._exact.add(new_ids, new_vectors)
        try:
            if self._retrain_due():
                self._train()
            elif self._codes is not None:
                rotated = self._rotated(new_vectors)
                self._codes.add(rotated)
                self._packed.add(rotated)
        except Exception:
            self._exact.remove(new_ids)  # keep both copies in step
            if self._codes is not None and (
                self._codes.ntotal != len(self._exact) or self._packed.ntotal != len(self._exact)
            ):
                self._train()
            raise

    def _retrain_due(self) -> bool:
        size = len(self)
        if self._codes is None:
            return size >= int(self.params["min_train"])
        return self._trained_on < int(self.params["train_size"]) and size >= 4 * self._trained_on

    def _train(self) -> None:
        """Learn the codebooks from (a seeded sample of) the templates and encode them all."""
        import faiss

        vectors = self._exact.vectors
        sample_size = min(len(vectors), self.params["train_size"])
        rng = np.random.default_rng(0)
        sample = vectors[np.sort(rng.choice(len(vectors), sample_size, replace=False))]
        rotation = None
        if self.params["rotate"] and sample_size >= _MIN_ROTATION_TRAIN:
            opq = faiss.OPQMatrix(self.dim, self.params["subquantizers"])
            opq.niter = _OPQ_ITERATIONS
            opq.train(np.ascontiguousarray(sample))
            rotation = faiss.vector_to_array(opq.A).reshape(self.dim, self.dim).astype(np.float32)
        codes = faiss.IndexPQ(self.dim, self.params["subquantizers"], _BITS)
        codes.pq.cp.seed = 1234
        codes.train(_rotate(sample, rotation))
        codes.add(_rotate(vectors, rotation))
        self._codes, self._packed = codes, _packed_for_scan(codes)
        self._rotation, self._trained_on = rotation, sample_size

    def _rotated(self, vectors: FloatMatrix) -> FloatMatrix:
        """``vectors`` as the codes see them (rotated when a rotation was learnt)."""
        return _rotate(vectors, self._rotation)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove templates at once from the rows and the codes; returns how many were present."""
        doomed = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        rows = np.flatnonzero(np.isin(self._exact.ids(), doomed)).astype(np.int64)
        if len(rows) and self._codes is not None:
            # Codes sit at the same positions as the rows; faiss compacts in order too.
            self._codes.remove_ids(rows)
            self._packed = _packed_for_scan(self._codes)
        return self._exact.remove(doomed)

    def search(
        self, queries: npt.ArrayLike, k: int, allowed: AllowedIds = None
    ) -> tuple[FloatMatrix, IdArray]:
        """The ``k`` nearest allowed templates of each query (approximate, exactly filtered).

        Same contract as :meth:`ExactIndex.search`: Euclidean distances (exact,
        recomputed from the float32 rows), ascending, lower is more similar;
        ``inf``/``-1`` pad.
        """
        k = check_k(k)
        matrix = as_queries(queries, self.dim)
        allowed_ids = as_allowed(allowed)
        if len(self) == 0 or len(matrix) == 0:
            return empty_results(len(matrix), k)
        if self._codes is None:
            return self._exact.search_sorted_allowed(matrix, k, allowed_ids)
        candidates = self.params["rerank"] * k

        def fetch(batch: FloatMatrix, n: int) -> FoundPerQuery:
            found: FoundPerQuery = []
            for query, rows in zip(batch, self._scan(batch, n), strict=True):
                rows = rows[rows >= 0]
                if allowed_ids is not None:
                    rows = rows[is_allowed(self._exact.ids_at(rows), allowed_ids)]
                found.append(self._rerank(query, rows[:candidates], k))
            return found

        return widening_search(
            matrix,
            k,
            allowed_ids,
            size=len(self),
            wanted=candidates,
            params=self.params,
            exact=self._exact,
            fetch=fetch,
        )

    def _scan(self, matrix: FloatMatrix, fetch: int) -> npt.NDArray[np.int64]:
        """Candidate row positions by compressed distance, shape (n, fetch); -1 pads."""
        import faiss

        threads = 1 if len(matrix) == 1 else (self.params["threads"] or os.cpu_count() or 1)
        faiss.omp_set_num_threads(threads)
        _, rows = self._packed.search(self._rotated(matrix), fetch)
        return np.asarray(rows, dtype=np.int64)

    def _rerank(
        self, query: FloatMatrix, rows: npt.NDArray[np.int64], k: int
    ) -> tuple[FloatMatrix, IdArray]:
        """Exact distances of the candidate rows; the ``k`` best, ascending.

        The candidates are ranked with the expanded float32 form (one small
        matrix-vector product), and the ``2 k`` best are recomputed in float64,
        so the returned distances equal :func:`facetrust.face_distance`.
        """
        # np.take gathers scattered rows faster than fancy indexing (0.09 against
        # 0.15 ms for 1,000 rows of a 1M gallery).
        vectors = np.take(self._exact.vectors, rows, axis=0)
        if len(rows) > 2 * k:
            squared = np.take(self._exact.squared_norms, rows) - 2.0 * (vectors @ query)
            best = np.argpartition(squared, 2 * k - 1)[: 2 * k]
            rows, vectors = rows[best], vectors[best]
        diff = vectors.astype(np.float64) - query.astype(np.float64)
        exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.argsort(exact, kind="stable")[:k]
        return exact[order].astype(np.float32), self._exact.ids_at(rows[order])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write rows and codes atomically in one file (format in :mod:`.base`)."""
        import faiss

        codes_part = rotation_part = b""
        if self._codes is not None:
            codes_part = faiss.serialize_index(self._codes).tobytes()
        if self._rotation is not None:
            rotation_part = self._rotation.astype("<f4").tobytes()
        params = dict(self.params, trained_on=self._trained_on, rotated=bool(rotation_part))
        self._write(path, rotation_part + codes_part, params)

    @classmethod
    def from_payload(
        cls, dim: int, model_id: str, payload: bytes, count: int, params: dict[str, Any]
    ) -> QuantizedIndex:
        """Rebuild from :meth:`save`'s payload (the header is already verified)."""
        params = dict(params)
        trained_on = int(params.pop("trained_on", 0))
        rotated = bool(params.pop("rotated", False))
        index = cls(dim, model_id, **params)
        codes_part = index._read_rows(payload, count)
        if rotated:
            size = dim * dim * 4
            if len(codes_part) < size:
                raise IndexFileError(
                    "The index file's rotation is truncated. Rebuild the index from the store."
                )
            index._rotation = (
                np.frombuffer(codes_part[:size], dtype="<f4").reshape(dim, dim).astype(np.float32)
            )
            codes_part = codes_part[size:]
        if codes_part:
            import faiss

            try:
                codes = faiss.deserialize_index(np.frombuffer(codes_part, dtype=np.uint8))
            except RuntimeError as error:
                raise IndexFileError(
                    f"The quantized codes in the index file cannot be read ({error}). "
                    "Rebuild the index from the store."
                ) from error
            if not isinstance(codes, faiss.IndexPQ) or codes.ntotal != count or codes.d != dim:
                raise IndexFileError(
                    f"The index file's codes hold {codes.ntotal} templates of dimension "
                    f"{codes.d}, but it declares {count} of dimension {dim}. "
                    "Rebuild the index from the store."
                )
            index._codes, index._packed = codes, _packed_for_scan(codes)
            index._trained_on = trained_on
        return index
