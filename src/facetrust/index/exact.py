"""Exact k-nearest-neighbour search with one BLAS matrix product.

Squared distances come from ``||g||^2 - 2 g.q + ||q||^2`` with the gallery kept
as one contiguous float32 matrix and its squared norms cached, so a search is
one ``G @ Q.T`` product (OpenBLAS uses every core) plus a partial sort. The
returned distances are recomputed in float64 for the k winners, so they equal
:func:`facetrust.face_distance` to float32 precision.

Removal compacts the matrix in place, keeping the remaining rows in insertion
order (O(n) per call, whatever the number of ids: about 0.3 s at 1M templates),
so the matrix stays contiguous and row positions stay aligned with an index
built beside it (:class:`facetrust.index.quantized.QuantizedIndex`). Adding
grows the matrix by doubling. ``allowed`` filtering is exact by construction: disallowed rows are
never candidates (a small allowed set is gathered and searched on its own; a
large one masks the full product).

Measured at 1M templates on the shared 2-core machine: see the README section
"Scale: indexes" and ``benchmarks/bench_index.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError, InvalidParameter
from .base import (
    AllowedIds,
    FloatMatrix,
    IdArray,
    IndexHeader,
    as_allowed,
    as_entries,
    as_queries,
    check_k,
    empty_results,
    ids_checksum,
    is_allowed,
    write_index_file,
)

_G = TypeVar("_G", bound=np.generic)

#: Largest number of float32 scores one product may hold at once (128 MiB).
_MAX_SCORES = 32 * 1024 * 1024
#: Below this allowed fraction the allowed rows are gathered and searched alone.
_GATHER_BELOW = 0.25


class ExactIndex:
    """Brute-force index: exact results, O(n·dim) per query.

    Parameters
    ----------
    dim : int
        Vector length (128 for dlib).
    model_id : str
        The embedding model of the templates (recorded in saved files).

    Examples
    --------
    >>> index = ExactIndex(128, "dlib")
    >>> index.add([7, 9], vectors)                      # doctest: +SKIP
    >>> distances, ids = index.search(probe, k=5, allowed={7})  # doctest: +SKIP
    """

    kind = "exact"

    def __init__(self, dim: int, model_id: str) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidParameter(f"The 'dim' parameter must be an int >= 1. Got {dim!r}.")
        self._dim = dim
        self._model_id = model_id
        self._vectors: FloatMatrix = np.zeros((0, dim), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._ids: IdArray = np.zeros(0, dtype=np.int64)
        self._count = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    def __len__(self) -> int:
        return self._count

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, int | np.integer):
            return False
        return bool(np.any(self._ids[: self._count] == id_))

    def ids(self) -> IdArray:
        return self._ids[: self._count].copy()

    @property
    def vectors(self) -> FloatMatrix:
        """The stored vectors, shape (len, dim), rows in the order of :meth:`ids` (a view)."""
        return self._vectors[: self._count]

    @property
    def row_ids(self) -> IdArray:
        """The id of each row of :attr:`vectors`, shape (len,) (a view; :meth:`ids` copies)."""
        return self._ids[: self._count]

    @property
    def squared_norms(self) -> npt.NDArray[np.float32]:
        """Squared Euclidean norm of each row of :attr:`vectors`, shape (len,) (a view)."""
        return self._norms[: self._count]

    def ids_at(self, rows: npt.NDArray[np.integer[Any]]) -> IdArray:
        """The ids of the given row positions (rows as in :attr:`vectors`)."""
        found: IdArray = self._ids[: self._count][rows]
        return found

    def memory_bytes(self) -> int:
        """Bytes held by the vectors, norms and ids (including spare capacity)."""
        return int(self._vectors.nbytes + self._norms.nbytes + self._ids.nbytes)

    def vectors_of(self, ids: npt.ArrayLike) -> FloatMatrix:
        """The vectors of ``ids`` (each must be present), shape (len(ids), dim)."""
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        present = self._ids[: self._count]
        order = np.argsort(present, kind="stable")
        where = np.searchsorted(present, wanted, sorter=order).clip(0, max(self._count - 1, 0))
        rows = order[where] if self._count else where
        if self._count == 0 or not np.all(present[rows] == wanted):
            raise InvalidParameter("vectors_of: some ids are not in the index.")
        found: FloatMatrix = self._vectors[rows].copy()
        return found

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates (ids (n,) int64 >= 0, vectors (n, dim)).

        Raises
        ------
        InvalidParameter
            Wrong shape, non-finite values, a negative id, or an id already present.
        """
        new_ids, new_vectors = as_entries(ids, vectors, self._dim)
        if len(new_ids) == 0:
            return
        clash = np.isin(new_ids, self._ids[: self._count])
        if clash.any():
            raise InvalidParameter(
                f"Template id {int(new_ids[clash][0])} is already in the index. "
                "Remove it first to replace its template."
            )
        needed = self._count + len(new_ids)
        if needed > len(self._vectors):
            capacity = max(needed, 2 * len(self._vectors), 1024)
            self._vectors = _grow(self._vectors, capacity)
            self._norms = _grow(self._norms, capacity)
            self._ids = _grow(self._ids, capacity)
        end = self._count + len(new_ids)
        self._vectors[self._count : end] = new_vectors
        self._norms[self._count : end] = np.einsum("ij,ij->i", new_vectors, new_vectors)
        self._ids[self._count : end] = new_ids
        self._count = end

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove templates at once, keeping the other rows in order; unknown ids are ignored.

        Returns
        -------
        int
            How many of ``ids`` were in the index.
        """
        doomed = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        gone = np.isin(self._ids[: self._count], doomed)
        removed = int(gone.sum())
        if removed:
            keep = np.flatnonzero(~gone)
            kept = len(keep)
            self._vectors[:kept] = self._vectors[keep]
            self._norms[:kept] = self._norms[keep]
            self._ids[:kept] = self._ids[keep]
            # Zero the freed rows: a removed template must not linger in memory.
            self._vectors[kept : self._count] = 0.0
            self._norms[kept : self._count] = 0.0
            self._ids[kept : self._count] = 0
            self._count = kept
        return removed

    def search(
        self, queries: npt.ArrayLike, k: int, allowed: AllowedIds = None
    ) -> tuple[FloatMatrix, IdArray]:
        """The ``k`` nearest allowed templates of each query, exactly.

        Parameters
        ----------
        queries : array of shape (n, dim) or (dim,)
        k : int
        allowed : iterable of ids, optional
            Only these ids may be returned; None allows every id.

        Returns
        -------
        distances : float32 array of shape (n, k)
            Euclidean, ascending; lower is more similar; ``inf`` pads.
        ids : int64 array of shape (n, k)
            ``-1`` pads.
        """
        return self.search_sorted_allowed(queries, check_k(k), as_allowed(allowed))

    def search_sorted_allowed(
        self, queries: npt.ArrayLike, k: int, allowed: IdArray | None
    ) -> tuple[FloatMatrix, IdArray]:
        """:meth:`search` with ``allowed`` already a sorted unique int64 array (or None)."""
        matrix = as_queries(queries, self._dim)
        distances, result_ids = empty_results(len(matrix), k)
        if self._count == 0 or len(matrix) == 0:
            return distances, result_ids
        ids = self._ids[: self._count]
        vectors = self._vectors[: self._count]
        norms = self._norms[: self._count]
        mask: npt.NDArray[np.bool_] | None = None
        if allowed is not None:
            mask = is_allowed(ids, allowed)
            rows = np.nonzero(mask)[0]
            if len(rows) == 0:
                return distances, result_ids
            if len(rows) < _GATHER_BELOW * self._count:
                ids, vectors, norms = ids[rows], vectors[rows], norms[rows]
                mask = None
        take = min(k, len(ids))
        step = max(1, _MAX_SCORES // len(ids))
        for start in range(0, len(matrix), step):
            chunk = matrix[start : start + step]
            scores = chunk @ vectors.T  # (n_chunk, n_gallery), rows contiguous
            scores *= -2.0
            scores += norms[None, :]
            if mask is not None:
                scores[:, ~mask] = np.inf
            if take < len(ids):
                top = np.argpartition(scores, take - 1, axis=1)[:, :take]
            else:
                top = np.broadcast_to(np.arange(len(ids))[None, :], (len(chunk), len(ids)))
            for j in range(len(chunk)):
                rows_j = top[j]
                # Exact float64 distances for the winners only.
                diff = vectors[rows_j].astype(np.float64) - chunk[j].astype(np.float64)
                exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
                if mask is not None:
                    exact[~mask[rows_j]] = np.inf
                order = np.argsort(exact, kind="stable")
                found = exact[order]
                keep = np.isfinite(found)
                n_found = int(keep.sum())
                distances[start + j, :n_found] = found[keep]
                result_ids[start + j, :n_found] = ids[rows_j[order][keep]]
        return distances, result_ids

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ids and vectors atomically (see :mod:`facetrust.index.base` for the format)."""
        payload = _pack(self.ids(), np.ascontiguousarray(self.vectors))
        write_index_file(path, self.header_for(payload, {}), payload)

    def header_for(self, payload: bytes, params: dict[str, object]) -> IndexHeader:
        """The file header of these rows with ``payload`` and ``params`` (kind ``exact``)."""
        return IndexHeader(
            kind=self.kind,
            dim=self._dim,
            count=self._count,
            model_id=self._model_id,
            ids_sha256=ids_checksum(self.ids()),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            params=dict(params),
        )

    @classmethod
    def from_payload(cls, dim: int, model_id: str, payload: bytes, count: int) -> ExactIndex:
        """Rebuild an index from the payload written by :meth:`save` (header already checked)."""
        index = cls(dim, model_id)
        ids, vectors = _unpack(payload, dim, count)
        index.add(ids, vectors)
        return index


class ExactBacked:
    """Base of the approximate indexes: their float32 rows live in an :class:`ExactIndex`.

    The subclass sets ``_exact``; size, ids, dimension and model come from it.
    """

    kind: ClassVar[str]
    _exact: ExactIndex

    @property
    def exact(self) -> ExactIndex:
        """The float32 rows (for the quantized index, in the codes' order)."""
        return self._exact

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

    def _write(self, path: str | os.PathLike[str], extra: bytes, params: dict[str, Any]) -> None:
        """Write the rows (length-prefixed) then ``extra`` atomically, as ``self.kind``."""
        exact_part = _pack(self._exact.ids(), np.ascontiguousarray(self._exact.vectors))
        payload = len(exact_part).to_bytes(8, "little") + exact_part + extra
        header = self._exact.header_for(payload, params)
        write_index_file(path, replace(header, kind=self.kind), payload)

    def _read_rows(self, payload: bytes, count: int) -> bytes:
        """Load the rows written by :meth:`_write` into ``_exact``; returns the ``extra`` bytes."""
        length = int.from_bytes(payload[:8], "little")
        view = memoryview(payload)  # slices of a view copy nothing (the rows are GBs at 1M)
        ids, vectors = _unpack(view[8 : 8 + length], self.dim, count)
        self._exact.add(ids, vectors)
        return bytes(view[8 + length :])


def check_positive_ints(owner: str, values: dict[str, object]) -> None:
    """InvalidParameter unless every value is an int >= 1 (bools refused)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameter(
                f"The {name!r} parameter of {owner} must be an int >= 1. Got {value!r}."
            )


def _grow(array: npt.NDArray[_G], capacity: int) -> npt.NDArray[_G]:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _pack(ids: IdArray, vectors: FloatMatrix) -> bytes:
    return ids.astype("<i8").tobytes() + vectors.astype("<f4").tobytes()


def _unpack(payload: bytes | memoryview, dim: int, count: int) -> tuple[IdArray, FloatMatrix]:
    size = count * 8 + count * dim * 4
    if len(payload) < size:
        raise IndexFileError(
            f"The index payload holds {len(payload)} bytes, fewer than the {size} its header "
            "declares. Rebuild the index from the store."
        )
    ids = np.frombuffer(payload, dtype="<i8", count=count).astype(np.int64)
    vectors = np.frombuffer(payload, dtype="<f4", count=count * dim, offset=count * 8)
    # a view of ``payload`` (no copy): the caller copies the rows into its own storage
    return ids, vectors.reshape(count, dim).astype(np.float32, copy=False)
