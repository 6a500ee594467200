"""The vector-index contract, the shared argument checks and the index file format.

Contract (faiss-style, the same for every implementation)::

    index.add(ids, vectors)            # ids (n,) int64 >= 0, vectors (n, dim) float32
    distances, ids = index.search(queries, k, allowed=None)
    index.remove(ids)                  # takes effect at once
    len(index); index.dim; index.ids()
    index.save(path)                   # atomic; load with facetrust.index.load_index

``search`` takes queries of shape (n, dim) (a single (dim,) vector is treated as
(1, dim)) and returns two arrays of shape (n, k): Euclidean **distances**
(float32; lower is more similar, the convention of :mod:`facetrust.matching`),
sorted ascending per row, and the matching ids (int64). Rows with fewer than
``k`` results are padded with distance ``inf`` and id ``-1``.

``allowed`` restricts the results to the given ids (for example the subjects
whose consent covers the search's purpose). Filtering is exact in every
implementation: no id outside ``allowed`` is ever returned (results are checked
against ``allowed`` after the search), and an approximate index widens its
search (or falls back to exact search over the allowed ids) until it has found
``k`` allowed results, so filtering does not lose allowed subjects.

File format: one file, written to a temporary name and moved into place with
``os.replace`` (a crash never leaves a half-written index under the real name)::

    b"FACETRUST-INDEX\\n" | 8-byte little-endian header length | header JSON | payload

The header records the index kind, dimension, count, model id, a SHA-256 of the
sorted id list and a SHA-256 of the payload. :func:`read_index_file` refuses a
file whose payload does not match its checksum (:class:`IndexFileError`);
:func:`check_header` refuses an intact file that no longer fits the store
(:class:`StaleIndex`), which the caller answers by rebuilding from the store.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError, InvalidParameter, StaleIndex

FloatMatrix = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
#: What ``allowed`` may be: any iterable or array of integer ids, or None (all ids).
AllowedIds = Iterable[int] | npt.NDArray[np.integer[Any]] | None

MAGIC = b"FACETRUST-INDEX\n"
FORMAT_VERSION = 1


@runtime_checkable
class VectorIndex(Protocol):
    """A k-nearest-neighbour index over templates keyed by int64 ids (see module docstring)."""

    @property
    def dim(self) -> int:
        """Length of each vector (128 for dlib)."""
        ...

    @property
    def model_id(self) -> str:
        """The embedding model whose templates the index holds (recorded in saved files)."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...

    def ids(self) -> IdArray:
        """Every id in the index, shape (n,), in no particular order."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates; raises InvalidParameter for a duplicate or negative id."""
        ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove templates at once; returns how many were present. Unknown ids are ignored."""
        ...

    def search(
        self, queries: npt.ArrayLike, k: int, allowed: AllowedIds = None
    ) -> tuple[FloatMatrix, IdArray]:
        """The ``k`` nearest allowed templates of each query: (distances, ids), each (n, k)."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically to ``path``."""
        ...


@dataclass(frozen=True)
class IndexHeader:
    """What a saved index declares about itself; checked on load.

    Attributes
    ----------
    kind : str
        ``"exact"`` or ``"hnsw"``.
    dim, count : int
    model_id : str
    ids_sha256 : str
        SHA-256 of the sorted int64 id list (see :func:`ids_checksum`).
    payload_sha256 : str
    params : dict
        Implementation parameters (graph sizes and the like).
    format_version : int
    """

    kind: str
    dim: int
    count: int
    model_id: str
    ids_sha256: str
    payload_sha256: str
    params: dict[str, Any]
    format_version: int = FORMAT_VERSION


def ids_checksum(ids: npt.ArrayLike) -> str:
    """SHA-256 (hex) of the sorted, de-duplicated int64 ids: equal for equal id sets."""
    array = unique_ids(np.asarray(ids, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(array.tobytes()).hexdigest()


def write_index_file(path: str | os.PathLike[str], header: IndexHeader, payload: bytes) -> None:
    """Write header and payload to ``path`` atomically (temporary file + ``os.replace``)."""
    target = Path(path)
    text = json.dumps(asdict(header), sort_keys=True).encode()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(struct.pack("<Q", len(text)))
            handle.write(text)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_index_file(path: str | os.PathLike[str]) -> tuple[IndexHeader, bytes]:
    """Read and verify a file written by :func:`write_index_file`.

    Raises
    ------
    IndexFileError
        The file is missing, not a facetrust index, truncated, of another format
        version, or its payload fails its checksum.
    """
    source = Path(path)
    try:
        # header and payload read apart: slicing one buffer would copy the payload
        # (hundreds of MB at a million templates) and hold both at once
        with source.open("rb") as handle:
            head = handle.read(len(MAGIC) + 8)
            if not head.startswith(MAGIC) or len(head) < len(MAGIC) + 8:
                raise IndexFileError(
                    f"{source} is not a facetrust index file (expected it to start with "
                    f"{MAGIC!r}). Rebuild the index from the store."
                )
            (length,) = struct.unpack("<Q", head[len(MAGIC) :])
            header_bytes = handle.read(length)
            payload = handle.read()
    except OSError as error:
        raise IndexFileError(
            f"Cannot read the index file {source}: {error.strerror or error}. "
            "Rebuild the index from the store."
        ) from error
    try:
        fields = json.loads(header_bytes)
        header = IndexHeader(**fields)
    except (ValueError, TypeError) as error:
        raise IndexFileError(
            f"The header of the index file {source} is unreadable ({error}). "
            "Rebuild the index from the store."
        ) from error
    if header.format_version != FORMAT_VERSION:
        raise IndexFileError(
            f"The index file {source} has format version {header.format_version}; this "
            f"facetrust reads version {FORMAT_VERSION}. Rebuild the index from the store."
        )
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise IndexFileError(
            f"The index file {source} is corrupt: its contents do not match the checksum in "
            "its header (truncated or modified). Rebuild the index from the store."
        )
    return header, payload


def unique_ids(ids: IdArray) -> IdArray:
    """``np.unique(ids)``, without its sort (or hash) when ``ids`` are already
    strictly increasing, as a saved index's rows are (a million ids at a cold start)."""
    flat = ids.reshape(-1)
    if len(flat) < 2 or bool(np.all(flat[1:] > flat[:-1])):
        return flat
    return np.unique(flat)


def check_header(
    header: IndexHeader,
    *,
    model_id: str | None = None,
    dim: int | None = None,
    ids: npt.ArrayLike | None = None,
    source: str = "the index file",
) -> None:
    """Refuse a saved index that does not fit the store.

    Raises
    ------
    StaleIndex
        The model, dimension or id set differs from the expected one.
    """
    problems = []
    if model_id is not None and header.model_id != model_id:
        problems.append(f"model {header.model_id!r} instead of {model_id!r}")
    if dim is not None and header.dim != dim:
        problems.append(f"dimension {header.dim} instead of {dim}")
    if ids is not None:
        expected = unique_ids(np.asarray(ids, dtype=np.int64))
        if header.count != len(expected):
            problems.append(f"{header.count} templates instead of {len(expected)}")
        elif header.ids_sha256 != ids_checksum(expected):
            problems.append("a different set of template ids")
    if problems:
        raise StaleIndex(
            f"{source} does not fit the store: it holds " + ", ".join(problems) + ". "
            "Rebuild the index from the store's templates."
        )


def as_queries(queries: npt.ArrayLike, dim: int) -> FloatMatrix:
    """Queries as a C-contiguous float32 array of shape (n, dim); one vector becomes (1, dim)."""
    array = np.asarray(queries, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidParameter(
            f"Queries must have shape (n, {dim}) or ({dim},). Got {array.shape} instead."
        )
    if not np.all(np.isfinite(array)):
        raise InvalidParameter("Queries must be finite. Got NaN or infinite values instead.")
    return np.ascontiguousarray(array)


def as_entries(ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int) -> tuple[IdArray, FloatMatrix]:
    """Validated (ids (n,) int64 >= 0 and unique, vectors (n, dim) finite float32)."""
    id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1 and len(id_array) == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape != (len(id_array), dim):
        raise InvalidParameter(
            f"Vectors must have shape ({len(id_array)}, {dim}) for {len(id_array)} ids. "
            f"Got {matrix.shape} instead."
        )
    if len(id_array) and id_array.min() < 0:
        raise InvalidParameter(
            f"Template ids must be non-negative integers (-1 marks padding). "
            f"Got {int(id_array.min())} instead."
        )
    if len(unique_ids(id_array)) != len(id_array):
        raise InvalidParameter("Template ids must be unique within one add(). Got repeats.")
    if not np.all(np.isfinite(matrix)):
        raise InvalidParameter("Vectors must be finite. Got NaN or infinite values instead.")
    return id_array, np.ascontiguousarray(matrix)


def as_allowed(allowed: AllowedIds) -> IdArray | None:
    """``allowed`` as a sorted unique int64 array (None stays None: every id allowed).

    An int64 array that is already sorted and unique is used as it is (O(n)
    check, no copy): pass one to keep filtered searches on large allowed sets cheap.
    """
    if allowed is None:
        return None
    if isinstance(allowed, np.ndarray):
        array = allowed.astype(np.int64, copy=False).reshape(-1)
        # A caller that keeps its allowed ids sorted (the gallery, per purpose) skips the sort.
        if len(array) < 2 or bool(np.all(array[1:] > array[:-1])):
            return array
    else:
        array = np.fromiter((int(i) for i in allowed), dtype=np.int64)
    return np.unique(array)


def is_allowed(ids: IdArray, allowed: IdArray | None) -> npt.NDArray[np.bool_]:
    """Boolean mask of ``ids`` (any shape) that are in ``allowed`` (sorted unique) and >= 0."""
    if allowed is None:
        return ids >= 0
    if len(allowed) == 0:
        return np.zeros(ids.shape, dtype=bool)
    where = np.searchsorted(allowed, ids).clip(0, len(allowed) - 1)
    mask: npt.NDArray[np.bool_] = (allowed[where] == ids) & (ids >= 0)
    return mask


def check_k(k: int) -> int:
    """``k`` as a positive int, or InvalidParameter."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidParameter(f"The 'k' parameter of search must be an int >= 1. Got {k!r}.")
    return int(k)


def empty_results(n: int, k: int) -> tuple[FloatMatrix, IdArray]:
    """(distances, ids) of shape (n, k) filled with the padding values inf and -1."""
    return np.full((n, k), np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


#: Per query of a batch: the allowed results found (distances, ids), ascending;
#: fewer than ``k`` when the candidates fetched held too few allowed ids.
FoundPerQuery = list[tuple[FloatMatrix, IdArray]]


class ExactFallback(Protocol):
    """What :func:`widening_search` needs from the exact side of an approximate index."""

    def search_sorted_allowed(
        self, queries: npt.ArrayLike, k: int, allowed: IdArray | None
    ) -> tuple[FloatMatrix, IdArray]: ...


def widening_search(
    matrix: FloatMatrix,
    k: int,
    allowed: IdArray | None,
    *,
    size: int,
    wanted: int,
    params: Mapping[str, Any],
    exact: ExactFallback,
    fetch: Callable[[FloatMatrix, int], FoundPerQuery],
) -> tuple[FloatMatrix, IdArray]:
    """Exactly filtered approximate search: the loop both approximate indexes share.

    A small allowed set (under ``params["exact_below_allowed"]`` ids or
    ``params["exact_below_fraction"]`` of ``size``) is searched exactly.
    Otherwise ``fetch(queries, n)`` is asked for ``n`` candidates per query --
    ``wanted`` scaled up by the inverse of the allowed fraction -- and returns
    the allowed results it found; a query still short of ``k`` is asked again
    with twice as many, and answered exactly once ``n`` would pass
    ``params["max_fetch"]``. So no disallowed id is returned and no allowed one
    is lost to filtering.
    """
    distances, result_ids = empty_results(len(matrix), k)
    start = wanted
    if allowed is not None:
        n_allowed = len(allowed)
        if n_allowed < params["exact_below_allowed"] or (
            n_allowed < params["exact_below_fraction"] * size
        ):
            return exact.search_sorted_allowed(matrix, k, allowed)
        start = math.ceil(1.5 * wanted * size / max(n_allowed, 1)) + 8
    pending = np.arange(len(matrix))
    n = start
    while len(pending):
        n = min(n, size)
        if n > params["max_fetch"] and n < size:
            d, i = exact.search_sorted_allowed(matrix[pending], k, allowed)
            distances[pending], result_ids[pending] = d, i
            break
        still = []
        for query, (found_d, found_i) in zip(pending, fetch(matrix[pending], n), strict=True):
            if len(found_i) < k and n < size:
                still.append(query)
                continue
            take = min(len(found_i), k)
            distances[query, :take], result_ids[query, :take] = found_d[:take], found_i[:take]
        pending = np.asarray(still, dtype=np.int64)
        n *= 2
    return distances, result_ids
