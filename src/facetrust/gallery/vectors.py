"""The vector index behind a gallery's search, kept in step with the store.

One :class:`TemplateVectors` per embedding model holds every readable template
of that model in a :class:`facetrust.index.AutoIndex` (exact search below
``GalleryConfig.index_exact_below`` templates, the quantized scan -- or an HNSW
graph when configured -- from there on),
keyed by int64 ids the gallery assigns in increasing order (the store's template
ids are strings). The index's float32 rows (:attr:`AutoIndex.exact`) stay in
that order -- rows are appended and removal keeps order -- so they serve, as
they are, the exact re-scoring of the few candidates a search returns and the
exact scans (small galleries, the score-normalized ``fmr-1e-3-fair`` point):
the templates are held once.

Consistency with the store: :meth:`TemplateVectors.sync` diffs the store's
templates against what the index holds, by template id and a digest of the
ciphertext. Templates gone (erased) or changed (re-keyed) are removed from the
index at once, new ones are decrypted and added; the approximate index is
never rebuilt for a change. :meth:`TemplateVectors.apply` does the same from
the store's change log (:meth:`facetrust.store.base.Store.changes_since`),
touching only what changed. The gallery calls one of them whenever the store's
generation counter moves, so an erasure in another process takes effect at
this process's next search.

Subjects are numbered in the order their first template arrived
(:attr:`TemplateVectors.subject_ids`); :attr:`TemplateVectors.owner_codes`
gives each row's subject number, so eligibility is a numpy lookup, never a
Python loop over the templates.

The approximate index's library (faiss for ``"quantized"`` and ``"auto"``, a
dependency; hnswlib for ``"hnsw"``, the optional ``index`` extra) is imported
on first use. When it cannot be, the gallery searches exactly at every size,
and says so once with a :class:`RuntimeWarning` when the configured kind would
have needed it.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError
from ..index import AutoIndex, ExactIndex, QuantizedIndex, faiss_available, hnsw_available

FloatMatrix = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

@dataclass(frozen=True)
class LiveTemplate:
    """A readable template as the store holds it now."""

    template_id: str
    subject_id: str
    digest: bytes


DIGEST_BYTES = 16


def ciphertext_digest(ciphertext: bytes) -> bytes:
    """16-byte digest of a sealed template: changes whenever it is re-encrypted."""
    return hashlib.blake2b(ciphertext, digest_size=DIGEST_BYTES).digest()


_NO_IDS: IdArray = np.zeros(0, dtype=np.int64)
_NO_VECTORS: FloatMatrix = np.zeros((0, 0), dtype=np.float32)
_NO_NORMS: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
for _empty in (_NO_IDS, _NO_VECTORS, _NO_NORMS):
    _empty.setflags(write=False)


class TemplateVectors:
    """One model's readable templates in a vector index (see module docstring).

    Parameters
    ----------
    model_id : str
    kind : {"auto", "exact", "quantized", "hnsw"}
    exact_below : int
        Size from which ``"auto"`` builds the approximate index; a filtered
        search over fewer eligible templates than this runs exactly, too.

    Attributes
    ----------
    subject_ids : list of str
        Every subject that has had a template here, by number (append-only).
    codes : dict of str to int
        Subject id -> its number in :attr:`subject_ids`.
    owner_codes : ndarray of shape (n,), int64
        Subject number of each row of :attr:`vectors`.
    generation : int
        Store generation of the last :meth:`sync` (-1 before the first).
    index : AutoIndex or None
        None until the first template arrives (its dimension is unknown
        before). It stays exact for good when no approximate index may be used
        (the ``"exact"`` kind, or its library missing): the gallery's own exact
        scan over :attr:`vectors` then answers.
    """

    def __init__(self, model_id: str, kind: str, exact_below: int) -> None:
        self.model_id = model_id
        self.kind = kind
        self.exact_below = exact_below
        self.subject_ids: list[str] = []
        self.codes: dict[str, int] = {}
        self.owner_codes: IdArray = _NO_IDS
        self._owners: npt.NDArray[np.object_] | None = None
        self.generation = -1
        self.index: AutoIndex | None = None
        self.slots: dict[str, tuple[bytes, int]] = {}  # template id -> (digest, index id)
        self.next_id = 0
        #: where the graph came from: "new" (built here) or "file" (loaded)
        self.source = "new"
        #: the store's removal counter when last synced (see Gallery._index)
        self.removals: str | None = None
        self._library = "hnswlib" if kind == "hnsw" else "faiss"
        available = hnsw_available() if kind == "hnsw" else faiss_available()
        self._graph_ok = kind != "exact" and available
        self._warned = False
        if kind in ("hnsw", "quantized") and not self._graph_ok:
            self._warn()

    @property
    def owners(self) -> npt.NDArray[np.object_]:
        """Subject id of each row of :attr:`vectors`, object array of shape (n,).

        Built on first use after a change (an O(n) pass): for index files and
        tests, not for searches.
        """
        if self._owners is None:
            names = np.empty(len(self.subject_ids), dtype=object)
            names[:] = self.subject_ids
            self._owners = names[self.owner_codes]
        return self._owners

    def _code(self, subject_id: str) -> int:
        code = self.codes.get(subject_id)
        if code is None:
            code = self.codes[subject_id] = len(self.subject_ids)
            self.subject_ids.append(subject_id)
        return code

    @property
    def ids(self) -> IdArray:
        """Index ids, ascending, shape (n,) (a view of the index's rows)."""
        return self.index.exact.row_ids if self.index is not None else _NO_IDS

    @property
    def vectors(self) -> FloatMatrix:
        """Protected templates, shape (n, dim); row ``i`` is ``ids[i]`` (a view)."""
        return self.index.exact.vectors if self.index is not None else _NO_VECTORS

    @property
    def squared_norms(self) -> npt.NDArray[np.float32]:
        """Squared norm of each row of :attr:`vectors` (cached by the index; a view)."""
        return self.index.exact.squared_norms if self.index is not None else _NO_NORMS

    @property
    def graph_possible(self) -> bool:
        """Whether this kind may use an approximate index (not ``"exact"``, library present)."""
        return self._graph_ok

    @property
    def is_approximate(self) -> bool:
        """Whether searches now go through the approximate index."""
        return self.index is not None and self.index.is_approximate

    @property
    def index_kind(self) -> str:
        """What answers searches now: ``"exact"``, ``"quantized"`` or ``"hnsw"``."""
        if self.index is None or not self.index.is_approximate:
            return ExactIndex.kind
        return str(self.index.inner.kind)

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            extra = "facetrust[index]" if self._library == "hnswlib" else "faiss-cpu"
            warnings.warn(
                f"The gallery's {self.kind!r} index needs {self._library}, which cannot be "
                "imported; searching exactly instead (correct, slower on large galleries). "
                f"Install {extra} to search large galleries fast.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _threshold(self) -> int:
        return 0 if self.kind in ("hnsw", "quantized") else self.exact_below

    def _new_index(self, dim: int) -> AutoIndex:
        if not self._graph_ok:  # exact for good: the switch size is never reached
            return AutoIndex(dim, self.model_id, threshold=sys.maxsize)
        if self.kind == "hnsw":
            return AutoIndex(
                dim,
                self.model_id,
                threshold=self._threshold(),
                approximate="hnsw",
                exact_below_allowed=self.exact_below,
            )
        # Learn the codebooks as soon as the gallery switches (at least 16 templates).
        min_train = max(16, min(self._threshold() or 16, 1024))
        return AutoIndex(
            dim,
            self.model_id,
            threshold=self._threshold(),
            approximate=QuantizedIndex.kind,
            exact_below_allowed=self.exact_below,
            min_train=min_train,
        )

    def adopt(
        self,
        index: AutoIndex,
        slots: dict[str, tuple[bytes, int]],
        owners: dict[str, str],
        next_id: int,
        generation: int,
    ) -> None:
        """Take over an index loaded from disk, with its template mapping.

        ``owners`` maps each template id of ``slots`` to its subject.

        Raises
        ------
        IndexFileError
            The mapping's ids are not the index's rows (nothing is taken over).
        """
        # One pass over the mapping in C-level steps, then a sort: a per-row
        # Python loop was the largest cost of opening a million-template file.
        codes = dict(self.codes)  # code = position in subject_ids, new subjects appended
        count = len(slots)
        slot_ids = np.fromiter(map(itemgetter(1), slots.values()), np.int64, count)
        subjects = list(map(owners.__getitem__, slots))
        for subject_id in dict.fromkeys(subjects):  # first appearance order
            codes.setdefault(subject_id, len(codes))
        subject_codes = np.fromiter(map(codes.__getitem__, subjects), np.int64, count)
        del subjects
        order = np.argsort(slot_ids, kind="stable")
        # its rows are in ascending id order (read_sealed_index checks)
        if not np.array_equal(slot_ids[order], index.exact.row_ids):
            raise IndexFileError(
                "The index file's template mapping does not match its rows: it is not used."
            )
        self.index = index
        self.codes = codes
        self.subject_ids = list(codes)
        self.owner_codes = subject_codes[order]
        self._owners = None
        self.index.threshold = self._threshold()
        if not isinstance(index.inner, ExactIndex):
            index.inner.params["exact_below_allowed"] = self.exact_below
        self.slots = dict(slots)
        self.next_id = next_id
        self.generation = generation
        self.source = "file"

    def sync(
        self,
        generation: int,
        live: Sequence[LiveTemplate],
        decrypt: Callable[[LiveTemplate], npt.NDArray[np.float32]],
    ) -> tuple[int, int]:
        """Bring the index to the store's ``live`` templates (see module docstring).

        Parameters
        ----------
        generation : int
            The store generation ``live`` was read at.
        live : sequence of LiveTemplate
            Every readable template of this model.
        decrypt : callable
            Returns the protected vector of a template, shape (dim,); called
            only for templates the index does not hold yet.

        Returns
        -------
        added, removed : int
            Templates added to and removed from the index (a re-keyed template counts in both).
        """
        current = {t.template_id: t.digest for t in live}
        gone = [tid for tid, (digest, _) in self.slots.items() if current.get(tid) != digest]
        fresh = [
            t
            for t in live
            if t.template_id not in self.slots or self.slots[t.template_id][0] != t.digest
        ]
        self._remove(gone)
        self._add(fresh, decrypt)
        self.generation = generation
        return len(fresh), len(gone)

    def apply(
        self,
        generation: int,
        removed: Iterable[str],
        changed: Sequence[LiveTemplate],
        decrypt: Callable[[LiveTemplate], npt.NDArray[np.float32]],
    ) -> tuple[int, int]:
        """Apply a change set from the store's change log (cost follows its size).

        Parameters
        ----------
        generation : int
            The store generation the changes bring the index to.
        removed : iterable of str
            Template ids to drop (those not held are ignored).
        changed : sequence of LiveTemplate
            Templates inserted or re-encrypted, readable now; one held with
            the same digest is kept as it is, one with another digest replaced.
        decrypt : callable
            As for :meth:`sync`.

        Returns
        -------
        added, removed : int
            As for :meth:`sync`.
        """
        fresh = [
            t
            for t in changed
            if t.template_id not in self.slots or self.slots[t.template_id][0] != t.digest
        ]
        gone = {tid for tid in removed if tid in self.slots}
        gone.update(t.template_id for t in fresh if t.template_id in self.slots)
        self._remove(sorted(gone))
        self._add(fresh, decrypt)
        self.generation = generation
        return len(fresh), len(gone)

    def _remove(self, template_ids: Sequence[str]) -> None:
        """Drop held templates at once, keeping the other rows in order."""
        if not template_ids or self.index is None:
            return
        gone_ids = np.asarray([self.slots.pop(tid)[1] for tid in template_ids], dtype=np.int64)
        self.owner_codes = self.owner_codes[~np.isin(self.ids, gone_ids)]
        self.index.remove(gone_ids)  # keeps the other rows in order
        self._owners = None

    def _add(
        self,
        fresh: Sequence[LiveTemplate],
        decrypt: Callable[[LiveTemplate], npt.NDArray[np.float32]],
    ) -> None:
        """Decrypt and append templates not held, under new (larger) ids."""
        if fresh:
            matrix = np.stack([decrypt(t) for t in fresh]).astype(np.float32)
            new_ids = np.arange(self.next_id, self.next_id + len(fresh), dtype=np.int64)
            if self.index is None:
                self.index = self._new_index(matrix.shape[1])
            # new ids are larger than every id held, so appending keeps ``ids`` sorted
            self.index.add(new_ids, matrix)
            codes = np.asarray([self._code(t.subject_id) for t in fresh], dtype=np.int64)
            self.owner_codes = np.concatenate([self.owner_codes, codes])
            for t, slot in zip(fresh, new_ids.tolist(), strict=True):
                self.slots[t.template_id] = (t.digest, slot)
            self.next_id += len(fresh)
            self._owners = None
        if self.kind == "auto" and not self._graph_ok and len(self.ids) >= self.exact_below:
            self._warn()

    def search(
        self, probe: npt.NDArray[np.float32], k: int, allowed: IdArray | None
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """The ``k`` nearest templates among ``allowed`` (sorted ids; None: all).

        Returns distances and ids, each of shape (at most k,), nearest first.
        """
        if self.index is None or (allowed is not None and not len(allowed)):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        distances, ids = self.index.search(probe, k, allowed=allowed)
        found = ids[0] >= 0
        return distances[0][found], ids[0][found]

    def rows_of(self, ids: IdArray) -> npt.NDArray[np.intp]:
        """Row positions in :attr:`vectors` of ``ids`` (each present)."""
        held = self.ids
        rows: npt.NDArray[np.intp] = np.searchsorted(held, ids).clip(0, len(held) - 1)
        return rows
