"""Exact below a gallery size, approximate above it; and loading any saved index.

:class:`AutoIndex` starts exact and turns itself into an approximate index --
a :class:`QuantizedIndex` by default, or an :class:`HnswIndex` when asked --
(built from its vectors, once) when an ``add`` takes it past ``threshold``
templates. It does not turn back when removals shrink it: the approximate index
still answers, and flapping around the threshold would rebuild repeatedly.
:func:`choose_index` is the stateless version for a caller that builds an index
from a known number of templates.

The default threshold is where, on the benchmark machine, exact search stops
being fast enough that an approximate one is worth its recall loss (see
``DEFAULT_EXACT_THRESHOLD`` and the README section "Scale: indexes").

Integration sketch for the gallery (the store stays the source of truth)::

    try:
        index = load_index(path, model_id=store.model_id, ids=store.template_ids())
    except IndexFileError:               # missing, corrupt or stale: rebuild
        index = AutoIndex(128, store.model_id)
        index.add(*store.all_templates())
        index.save(path)
    # enrol: store first, then index.add; erase: index.remove at once, then store.
    distances, ids = index.search(probe, k=5, allowed=store.consented_ids(purpose))
"""

from __future__ import annotations

import os
from typing import Any

import numpy.typing as npt

from ..errors import InvalidParameter
from .base import AllowedIds, FloatMatrix, IdArray, VectorIndex, check_header, read_index_file
from .exact import ExactIndex
from .hnsw import HnswIndex
from .quantized import QuantizedIndex

#: Gallery size from which an approximate index replaces exact search by default.
DEFAULT_EXACT_THRESHOLD = 20_000

ApproximateIndex = QuantizedIndex | HnswIndex
#: The approximate kinds, by the name settings and saved files use.
APPROXIMATE_KINDS: dict[str, type[QuantizedIndex] | type[HnswIndex]] = {
    QuantizedIndex.kind: QuantizedIndex,
    HnswIndex.kind: HnswIndex,
}


def _approximate_class(approximate: str) -> type[QuantizedIndex] | type[HnswIndex]:
    if approximate not in APPROXIMATE_KINDS:
        raise InvalidParameter(
            f"The approximate index kind must be one of {sorted(APPROXIMATE_KINDS)}. "
            f"Got {approximate!r}."
        )
    return APPROXIMATE_KINDS[approximate]


def choose_index(
    size: int,
    dim: int,
    model_id: str,
    *,
    threshold: int = DEFAULT_EXACT_THRESHOLD,
    approximate: str = QuantizedIndex.kind,
    **params: Any,
) -> ExactIndex | ApproximateIndex:
    """An empty index for ``size`` templates: exact below ``threshold``, approximate from it."""
    if size < threshold:
        return ExactIndex(dim, model_id)
    return _approximate_class(approximate)(dim, model_id, **params)


class AutoIndex:
    """Exact search below ``threshold`` templates, an approximate index from there on.

    Parameters
    ----------
    dim : int
    model_id : str
    threshold : int
        Size at which the approximate index is built (``DEFAULT_EXACT_THRESHOLD``).
    approximate : {"quantized", "hnsw"}
        Which approximate index: :class:`QuantizedIndex` (default) or :class:`HnswIndex`.
    **params
        Passed to the approximate index (``rerank``, ``expansion_search`` and so on).
    """

    kind = "auto"

    def __init__(
        self,
        dim: int,
        model_id: str,
        *,
        threshold: int = DEFAULT_EXACT_THRESHOLD,
        approximate: str = QuantizedIndex.kind,
        **params: Any,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise InvalidParameter(
                f"The 'threshold' parameter of AutoIndex must be an int >= 0. Got {threshold!r}."
            )
        self.threshold = threshold
        self.approximate = _approximate_class(approximate)
        self.params = params
        self.inner: ExactIndex | ApproximateIndex = ExactIndex(dim, model_id)

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def is_approximate(self) -> bool:
        """Whether searches now go through the approximate index."""
        return not isinstance(self.inner, ExactIndex)

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.inner

    def ids(self) -> IdArray:
        return self.inner.ids()

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()

    @property
    def exact(self) -> ExactIndex:
        """The float32 rows, whichever index answers (see :attr:`ExactBacked.exact`)."""
        return self.inner if isinstance(self.inner, ExactIndex) else self.inner.exact

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add templates; builds the approximate index once the size reaches ``threshold``."""
        self.inner.add(ids, vectors)
        if isinstance(self.inner, ExactIndex) and len(self.inner) >= self.threshold:
            approximate = self.approximate(self.dim, self.model_id, **self.params)
            approximate.add(self.inner.ids(), self.inner.vectors)
            self.inner = approximate

    def remove(self, ids: npt.ArrayLike) -> int:
        return self.inner.remove(ids)

    def search(
        self, queries: npt.ArrayLike, k: int, allowed: AllowedIds = None
    ) -> tuple[FloatMatrix, IdArray]:
        """See :meth:`ExactIndex.search` (exact) and the approximate index's ``search``."""
        return self.inner.search(queries, k, allowed)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves the inner index; :func:`load_index` returns it wrapped again when asked."""
        self.inner.save(path)


def load_index(
    path: str | os.PathLike[str],
    *,
    model_id: str | None = None,
    dim: int | None = None,
    ids: npt.ArrayLike | None = None,
    threshold: int | None = None,
) -> VectorIndex:
    """Load an index saved by any implementation, refusing one that does not fit.

    Parameters
    ----------
    path : path
    model_id, dim : optional
        Expected model and dimension.
    ids : array of int64, optional
        The template ids the store holds now; the file must hold exactly these.
    threshold : int, optional
        When given, the loaded index is wrapped in an :class:`AutoIndex` with
        this threshold.

    Raises
    ------
    IndexFileError
        The file is missing, unreadable, corrupt or of another format.
    StaleIndex
        The file is intact but its model, dimension or ids differ from those given.
    """
    header, payload = read_index_file(path)
    check_header(header, model_id=model_id, dim=dim, ids=ids, source=f"The index file {path}")
    inner: ExactIndex | ApproximateIndex
    if header.kind == ExactIndex.kind:
        inner = ExactIndex.from_payload(header.dim, header.model_id, payload, header.count)
    elif header.kind in APPROXIMATE_KINDS:
        inner = APPROXIMATE_KINDS[header.kind].from_payload(
            header.dim, header.model_id, payload, header.count, header.params
        )
    else:
        from ..errors import IndexFileError

        raise IndexFileError(
            f"The index file {path} holds an index of unknown kind {header.kind!r}; expected "
            f"'exact' or one of {sorted(APPROXIMATE_KINDS)}. Rebuild the index from the store."
        )
    if threshold is None:
        return inner
    approximate = header.kind if header.kind in APPROXIMATE_KINDS else QuantizedIndex.kind
    auto = AutoIndex(header.dim, header.model_id, threshold=threshold, approximate=approximate)
    auto.inner = inner
    return auto
