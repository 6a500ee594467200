"""Approximate search with an HNSW graph (usearch), exact on what it returns.

:class:`HnswIndex` keeps two things in step: an :class:`ExactIndex` (the float32
vectors, used for exact distances, exact fallback and persistence) and a usearch
HNSW graph over the same ids. Every method updates both, so the graph never
holds a template the exact side does not, and ``remove`` deletes from both at
once (usearch marks the node deleted: it is never returned again).

Filtering (``allowed``) is exact:

* when few ids are allowed (fewer than ``exact_below_allowed``, or under
  ``exact_below_fraction`` of the index) the search runs exactly over the
  allowed ids only, since a graph walk would have to skip almost everything;
* otherwise the graph is asked for ``k / fraction`` candidates (over-fetch),
  the candidates are checked against ``allowed`` and the search is repeated with
  twice as many for any query that still lacks ``k`` allowed results, up to
  ``max_fetch``, after which that query is answered exactly.

So no disallowed id is ever returned, and an allowed template is lost only
where the graph itself misses it (the recall measured in the benchmark).

Library choice (``benchmarks/compare_hnsw_libraries.py``, same data, M=16,
ef_construction=128, 2 threads, shared 2-core machine): see the README section
"Scale: indexes" and ``benchmarks/results/hnsw_libraries.json``. usearch was
chosen: fastest build and query at equal recall among usearch, hnswlib and
faiss-cpu in that run, true deletion (faiss's HNSW cannot remove), keys are our
int64 ids directly, and it serialises to bytes (no temporary files).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError, InvalidParameter
from .base import (
    AllowedIds,
    FloatMatrix,
    IdArray,
    as_allowed,
    as_entries,
    as_queries,
    check_k,
    empty_results,
    is_allowed,
    write_index_file,
)
from .exact import ExactIndex, _pack, _unpack


class HnswIndex:
    """HNSW approximate index with exact filtering, removal and persistence.

    Parameters
    ----------
    dim : int
    model_id : str
    connectivity : int
        Graph links per node (HNSW ``M``); more is slower to build, more accurate.
    expansion_add : int
        Search width while building (``ef_construction``).
    expansion_search : int
        Search width while querying (``ef``); raised to ``k`` when smaller.
        Higher gives better recall and slower queries.
    threads : int
        Threads for building and batch search (0: every core).
    exact_below_allowed, exact_below_fraction :
        A filtered search goes exact when the allowed set is smaller than either.
    max_fetch : int
        Most candidates one graph search may ask for before going exact.
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        model_id: str,
        *,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        threads: int = 0,
        exact_below_allowed: int = 20_000,
        exact_below_fraction: float = 0.02,
        max_fetch: int = 4096,
    ) -> None:
        for name, value in (
            ("connectivity", connectivity),
            ("expansion_add", expansion_add),
            ("expansion_search", expansion_search),
            ("max_fetch", max_fetch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameter(
                    f"The {name!r} parameter of HnswIndex must be an int >= 1. Got {value!r}."
                )
        self._exact = ExactIndex(dim, model_id)
        self.params: dict[str, Any] = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
            "threads": threads,
            "exact_below_allowed": exact_below_allowed,
            "exact_below_fraction": exact_below_fraction,
            "max_fetch": max_fetch,
        }
        self._graph = self._new_graph()

    def _new_graph(self) -> Any:
        from usearch.index import Index  # imported lazily: nothing heavy at import time

        return Index(
            ndim=self._exact.dim,
            metric="l2sq",
            dtype="f32",
            connectivity=self.params["connectivity"],
            expansion_add=self.params["expansion_add"],
            expansion_search=self.params["expansion_search"],
        )

    @property
    def expansion_search(self) -> int:
        """Search width (HNSW ``ef``); settable. Higher: better recall, slower queries."""
        return int(self.params["expansion_search"])

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameter(
                f"The 'expansion_search' parameter must be an int >= 1. Got {value!r}."
            )
        self.params["expansion_search"] = value

    @property
    def dim(self) -> int:
        return self._exact.dim

    @property
    def model_id(self) -> str:
        return self._exact.model_id

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._exact

    def ids(self) -> IdArray:
        return self._exact.ids()

    def memory_bytes(self) -> int:
        """Bytes held by the graph (usearch's count) and the exact vectors."""
        return int(self._graph.memory_usage) + self._exact.memory_bytes()

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates to the vectors and the graph (see :meth:`ExactIndex.add`)."""
        new_ids, new_vectors = as_entries(ids, vectors, self.dim)
        if len(new_ids) == 0:
            return
        self._exact.add(new_ids, new_vectors)
        try:
            self._graph.add(new_ids.astype(np.uint64), new_vectors, threads=self.params["threads"])
        except Exception:
            self._exact.remove(new_ids)  # keep both sides in step
            raise

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove templates from vectors and graph at once; returns how many were present."""
        doomed = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        doomed = doomed[doomed >= 0]
        present = doomed[np.isin(doomed, self._exact.ids())]
        if len(present):
            self._graph.remove(present.astype(np.uint64))
        return self._exact.remove(present)

    def search(
        self, queries: npt.ArrayLike, k: int, allowed: AllowedIds = None
    ) -> tuple[FloatMatrix, IdArray]:
        """The ``k`` nearest allowed templates of each query (approximate, exactly filtered).

        Same contract as :meth:`ExactIndex.search`; distances are Euclidean,
        ascending, lower is more similar; ``inf``/``-1`` pad.
        """
        k = check_k(k)
        matrix = as_queries(queries, self.dim)
        allowed_ids = as_allowed(allowed)
        size = len(self)
        distances, result_ids = empty_results(len(matrix), k)
        if size == 0 or len(matrix) == 0:
            return distances, result_ids
        if allowed_ids is not None:
            n_allowed = len(allowed_ids)
            if n_allowed < self.params["exact_below_allowed"] or (
                n_allowed < self.params["exact_below_fraction"] * size
            ):
                return self._exact.search_sorted_allowed(matrix, k, allowed_ids)
            fetch = math.ceil(1.5 * k * size / max(n_allowed, 1)) + 8
        else:
            fetch = k
        pending = np.arange(len(matrix))
        while len(pending):
            fetch = min(fetch, size)
            if fetch > self.params["max_fetch"] and fetch < size:
                d, i = self._exact.search_sorted_allowed(matrix[pending], k, allowed_ids)
                distances[pending], result_ids[pending] = d, i
                break
            found_d, found_i = self._graph_search(matrix[pending], fetch)
            keep = is_allowed(found_i, allowed_ids)
            still = []
            for row, query in enumerate(pending):
                ok = keep[row]
                n_ok = int(ok.sum())
                take = min(n_ok, k)
                distances[query, :take] = found_d[row][ok][:take]
                result_ids[query, :take] = found_i[row][ok][:take]
                if n_ok < k and fetch < size:
                    still.append(query)
            pending = np.asarray(still, dtype=np.int64)
            fetch *= 2
        return distances, result_ids

    def _graph_search(self, matrix: FloatMatrix, fetch: int) -> tuple[FloatMatrix, IdArray]:
        """Graph candidates (distances ascending, ids; -1/inf pad), shape (n, fetch)."""
        self._graph.expansion_search = max(self.params["expansion_search"], fetch)
        matches = self._graph.search(matrix, fetch, threads=self.params["threads"])
        if hasattr(matches, "counts"):  # BatchMatches: padded (n, fetch) arrays
            keys = np.asarray(matches.keys).reshape(len(matrix), -1)
            squared = np.asarray(matches.distances, dtype=np.float32).reshape(len(matrix), -1)
            counts = np.asarray(matches.counts).reshape(-1)
        else:  # one query gives Matches: only the found entries
            found = np.asarray(matches.keys).reshape(-1)
            keys = np.zeros((1, fetch), dtype=np.uint64)
            squared = np.zeros((1, fetch), dtype=np.float32)
            keys[0, : len(found)] = found
            squared[0, : len(found)] = np.asarray(matches.distances).reshape(-1)
            counts = np.asarray([len(found)])
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        ids = np.where(valid, keys.astype(np.int64), -1)
        squared = np.where(valid, np.maximum(squared, 0.0), np.inf)  # padding may hold NaN
        distances = np.sqrt(squared).astype(np.float32)
        return distances, ids

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vectors and graph atomically in one file (format in :mod:`.base`)."""
        exact_part = _pack(self._exact.ids(), np.ascontiguousarray(self._exact.vectors))
        graph_part = bytes(self._graph.save())
        payload = len(exact_part).to_bytes(8, "little") + exact_part + graph_part
        header = self._exact._header(payload, self.params)
        header = type(header)(**{**header.__dict__, "kind": self.kind})
        write_index_file(path, header, payload)

    @classmethod
    def from_payload(
        cls, dim: int, model_id: str, payload: bytes, count: int, params: dict[str, Any]
    ) -> HnswIndex:
        """Rebuild from :meth:`save`'s payload; the graph is rebuilt when it will not load."""
        index = cls(dim, model_id, **params)
        length = int.from_bytes(payload[:8], "little")
        ids, vectors = _unpack(payload[8 : 8 + length], dim, count)
        graph_bytes = payload[8 + length :]
        index._exact.add(ids, vectors)
        try:
            from usearch.index import Index

            graph: Any = Index.restore(graph_bytes)
        except Exception as error:  # usearch raises bare exceptions on bad buffers
            raise IndexFileError(
                f"The HNSW graph in the index file cannot be read ({error}). "
                "Rebuild the index from the store."
            ) from error
        if graph is None or len(graph) != count:
            index._graph.add(ids.astype(np.uint64), vectors, threads=params.get("threads", 0))
        else:
            graph.expansion_search = params.get("expansion_search", 64)
            index._graph = graph
        return index
