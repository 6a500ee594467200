"""Vector indexes: exact and approximate k-nearest-neighbour search over templates.

The gallery keeps one index of its templates and searches it with the ids of
the subjects whose consent covers the purpose as ``allowed``. Every index
follows the contract of :class:`VectorIndex` (see :mod:`facetrust.index.base`)::

    distances, ids = index.search(queries, k, allowed=consented_ids)

* :class:`ExactIndex` -- one BLAS matrix product per batch; exact.
* :class:`QuantizedIndex` -- faiss fast scan of 4-bit product-quantized
  templates, exact re-ranking; approximate, exactly filtered. The default
  above :data:`DEFAULT_EXACT_THRESHOLD` templates.
* :class:`HnswIndex` -- hnswlib HNSW graph; approximate, exactly filtered.
* :class:`AutoIndex` / :func:`choose_index` -- exact below a size, approximate above.
* :func:`load_index` -- read a saved index, refusing a stale or corrupt file.

Importing this package imports neither faiss nor hnswlib; each loads on first use.
"""

from .auto import DEFAULT_EXACT_THRESHOLD, AutoIndex, choose_index, load_index
from .base import AllowedIds, IndexHeader, VectorIndex, ids_checksum
from .exact import ExactIndex
from .hnsw import HnswIndex, hnsw_available
from .quantized import QuantizedIndex, faiss_available

__all__ = [
    "DEFAULT_EXACT_THRESHOLD",
    "AllowedIds",
    "AutoIndex",
    "ExactIndex",
    "HnswIndex",
    "IndexHeader",
    "QuantizedIndex",
    "VectorIndex",
    "choose_index",
    "faiss_available",
    "hnsw_available",
    "ids_checksum",
    "load_index",
]
