"""Approximate search with an HNSW graph (hnswlib), exactly filtered.

:class:`HnswIndex` keeps two things in step: an :class:`ExactIndex` (the float32
vectors, used for exact fallback, persistence and rebuilds) and an hnswlib
HNSW graph over the same ids. Every method updates both, so the graph never
answers with a template the exact side does not hold.

Erasure: ``remove`` deletes the vector from the exact side and marks the graph
node deleted, both at once: a removed id is never returned again. hnswlib keeps
a deleted node's bytes in memory until the graph is rebuilt, so
:meth:`HnswIndex.compact` rebuilds it from the live vectors, and ``save``
compacts first whenever something was removed: an erased template never
reaches disk.

Filtering (``allowed``) is exact:

* when few ids are allowed (fewer than ``exact_below_allowed``, or under
  ``exact_below_fraction`` of the index) the search runs exactly over the
  allowed ids only, since a graph walk would have to skip almost everything;
* otherwise the graph is asked for ``1.5 * k / fraction`` candidates
  (over-fetch), the candidates are checked against ``allowed``, and any query
  still short of ``k`` allowed results is repeated with twice as many, up to
  ``max_fetch``, after which that query is answered exactly.

So no disallowed id is ever returned, and an allowed template is lost only
where the graph itself misses it (the recall measured in the benchmark).

Library choice (``benchmarks/compare_hnsw_libraries.py``: 20,000 templates from
the fitted synthetic model, M=16, ef_construction=64, 2 build threads, the
shared 2-core machine under load; results in
``benchmarks/results/hnsw_libraries.json``): at equal recall (recall@1 0.92 at
ef=64, 0.96 at ef=128 for all three) hnswlib built in 7.3 s against 9.9 s for
faiss-cpu and 17.9 s for usearch, and answered a single query in 0.10 ms (p50,
ef=64) against 0.11 ms for faiss and 0.30 ms for usearch. faiss's HNSW cannot
delete; usearch and hnswlib can. hnswlib was chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
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
from .scratch import private_scratch


def hnsw_available() -> bool:
    """Whether hnswlib can be imported (the optional ``index`` extra)."""
    try:
        import hnswlib  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


class HnswIndex(ExactBacked):
    """HNSW approximate index with exact filtering, immediate removal and persistence.

    Parameters
    ----------
    dim : int
    model_id : str
    connectivity : int
        Graph links per node (HNSW ``M``); more is slower to build, more accurate.
    expansion_add : int
        Search width while building (``ef_construction``).
    expansion_search : int
        Search width while querying (``ef``, settable later); raised to the
        number of candidates asked for. Higher: better recall, slower queries.
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
        connectivity: int = 32,
        expansion_add: int = 128,
        expansion_search: int = 128,
        threads: int = 0,
        exact_below_allowed: int = 20_000,
        exact_below_fraction: float = 0.02,
        max_fetch: int = 4096,
    ) -> None:
        check_positive_ints(
            "HnswIndex",
            {
                "connectivity": connectivity,
                "expansion_add": expansion_add,
                "expansion_search": expansion_search,
                "max_fetch": max_fetch,
            },
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
        self._graph = self._new_graph(1024)
        self._removed_since_build = 0

    def _new_graph(self, capacity: int) -> Any:
        import hnswlib  # lazily: nothing heavy at import

        graph = hnswlib.Index(space="l2", dim=self._exact.dim)
        graph.init_index(
            max_elements=capacity,
            M=self.params["connectivity"],
            ef_construction=self.params["expansion_add"],
            random_seed=100,
        )
        return graph

    @property
    def _threads(self) -> int:
        return int(self.params["threads"]) or -1

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

    def memory_bytes(self) -> int:
        """Bytes held by the graph (vectors, links, labels) and the exact vectors."""
        graph = self._graph
        per_node = self.dim * 4 + 8 + 4 + 2 * self.params["connectivity"] * 4 + 4
        return int(graph.get_max_elements() * per_node) + self._exact.memory_bytes()

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates to the vectors and the graph (see :meth:`ExactIndex.add`)."""
        new_ids, new_vectors = as_entries(ids, vectors, self.dim)
        if len(new_ids) == 0:
            return
        self._exact.add(new_ids, new_vectors)
        try:
            needed = self._graph.element_count + len(new_ids)
            if needed > self._graph.get_max_elements():
                self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
            # A re-enrolled id that was removed earlier is revived and updated.
            self._graph.add_items(new_vectors, new_ids, num_threads=self._threads)
        except Exception:
            self._exact.remove(new_ids)  # keep both sides in step
            raise

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove templates at once from vectors and graph; returns how many were present."""
        doomed = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        present = doomed[np.isin(doomed, self._exact.ids())]
        for id_ in present:
            self._graph.mark_deleted(int(id_))
        self._removed_since_build += len(present)
        return self._exact.remove(present)

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, dropping removed nodes' bytes."""
        graph = self._new_graph(max(len(self), 1024))
        if len(self):
            graph.add_items(self._exact.vectors, self._exact.ids(), num_threads=self._threads)
        self._graph = graph
        self._removed_since_build = 0

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
        if len(self) == 0 or len(matrix) == 0:
            return empty_results(len(matrix), k)

        def fetch(batch: FloatMatrix, n: int) -> FoundPerQuery:
            found_d, found_i = self._graph_search(batch, n)
            keep = is_allowed(found_i, allowed_ids)
            return [(d[ok], i[ok]) for d, i, ok in zip(found_d, found_i, keep, strict=True)]

        return widening_search(
            matrix,
            k,
            allowed_ids,
            size=len(self),
            wanted=k,
            params=self.params,
            exact=self._exact,
            fetch=fetch,
        )

    def _graph_search(self, matrix: FloatMatrix, fetch: int) -> tuple[FloatMatrix, IdArray]:
        """Graph candidates, shape (n, fetch): distances ascending, ids; -1/inf pad."""
        self._graph.set_ef(max(self.params["expansion_search"], fetch))
        threads = 1 if len(matrix) == 1 else self._threads
        try:
            labels, squared = self._graph.knn_query(matrix, k=fetch, num_threads=threads)
        except RuntimeError:
            # hnswlib refuses when it cannot fill every row (tiny or heavily pruned
            # graphs); the exact side answers instead.
            d, i = self._exact.search_sorted_allowed(matrix, fetch, None)
            return d, i
        ids = np.asarray(labels, dtype=np.int64)
        distances = np.sqrt(np.maximum(np.asarray(squared, dtype=np.float32), 0.0))
        return distances.astype(np.float32), ids

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vectors and graph atomically in one file (format in :mod:`.base`).

        Compacts first when templates were removed since the graph was built,
        so erased templates are not written.
        """
        if self._removed_since_build:
            self.compact()
        target = Path(path)
        scratch = target.with_name(f".{target.name}.{os.getpid()}.graph")
        try:
            self._graph.save_index(str(scratch))
            graph_part = scratch.read_bytes()
        finally:
            scratch.unlink(missing_ok=True)
        self._write(path, graph_part, self.params)

    @classmethod
    def from_payload(
        cls, dim: int, model_id: str, payload: bytes, count: int, params: dict[str, Any]
    ) -> HnswIndex:
        """Rebuild from :meth:`save`'s payload (the header is already verified)."""
        index = cls(dim, model_id, **params)
        graph_part = index._read_rows(payload, count)
        import hnswlib

        graph = hnswlib.Index(space="l2", dim=dim)
        with private_scratch() as folder:  # the graph holds the vectors: never left behind
            scratch = folder / "graph.bin"
            scratch.write_bytes(graph_part)
            try:
                graph.load_index(str(scratch), max_elements=max(count, 1024))
            except (RuntimeError, ValueError) as error:
                raise IndexFileError(
                    f"The HNSW graph in the index file cannot be read ({error}). "
                    "Rebuild the index from the store."
                ) from error
        if graph.element_count != count:
            raise IndexFileError(
                f"The HNSW graph holds {graph.element_count} nodes but the index file declares "
                f"{count} templates. Rebuild the index from the store."
            )
        index._graph = graph
        return index
