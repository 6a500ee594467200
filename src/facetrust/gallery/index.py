"""The in-memory search index of a gallery: decrypted, protected templates.

Templates are decrypted once per process and kept in memory only; the index is
brought up to date whenever the store's generation counter moves (any change to subjects,
consents or templates, by this process or another): from the store's change
log, only what changed is decrypted and only the changed subjects' times are
re-read (:meth:`TemplateIndex.updated`). Eligibility is decided per
search from the stored consent and retention times, so a consent that expires
or a subject past retention is excluded from the very second it lapses, even
before a sweep removes the data.

A subject's last-interaction time moving forward (a verification, a confirmed
identification) is picked up at the next change of the store's generation.

Search: below ``GalleryConfig.index_exact_below`` templates (and always for
the ``"exact"`` index kind, or without the approximate index's library) one
single-threaded matrix-vector product over the eligible templates, exact. From
that size on, through the approximate index of
:class:`~facetrust.gallery.vectors.TemplateVectors` (the quantized scan by
default, or an HNSW graph), with the eligible template ids as the exact
``allowed`` set (filtering recall is what :class:`~facetrust.index.QuantizedIndex`
and :class:`~facetrust.index.HnswIndex` guarantee: over-fetch, then exact
search when too few are found or few are eligible). A search with a score
normalizer (``fmr-1e-3-fair``) stays exact over every eligible template: the
normalization depends on both templates' clusters, so the index's raw
distances cannot rank it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat

import numpy as np
import numpy.typing as npt

from ..index import DEFAULT_EXACT_THRESHOLD
from ..score_normalization import ScoreNormalizer
from ..store.base import ConsentRecord, EligibilityColumns
from .vectors import LiveTemplate, TemplateVectors, ciphertext_digest


@dataclass(frozen=True)
class SearchHit:
    """A subject's best (smallest) distance to the probe."""

    subject_id: str
    distance: float


@dataclass(frozen=True)
class Eligibility:
    """Who may be searched for one purpose, for a window of time.

    The set changes only when the store does (a new :class:`TemplateIndex`) or
    when the clock passes a consent expiry or retention deadline, so it is
    computed once per window instead of once per search (an O(templates) pass
    that costs several milliseconds at a million templates).
    """

    subjects_ok: npt.NDArray[np.bool_]
    rows_ok: npt.NDArray[np.bool_]
    #: Index ids of the eligible templates, ascending; None when all are eligible.
    allowed: npt.NDArray[np.int64] | None
    searched: int
    #: POSIX seconds: valid from ``since`` until just before ``until`` (the next deadline).
    since: float
    until: float


@dataclass
class TemplateIndex:
    """Protected templates of one model, with what decides each subject's eligibility.

    Attributes
    ----------
    generation : int
        The store generation the index was built from.
    model_id : str
    subject_ids : list of str
        Subjects that have (or had) templates of ``model_id``; position =
        subject index. Shared with ``templates`` and append-only: use only
        positions below ``len(retention_until)``; a subject without templates
        now is never searched.
    templates : TemplateVectors
        The vectors (``templates.vectors``, shape (n_templates, dim), float32,
        protected) and the vector index over them, kept in step with the store.
        They are updated in place, so a TemplateIndex is valid only until the
        store's next change: take the current one from ``Gallery._index``.
    owners : ndarray of shape (n_templates,), int64
        Subject index of each template (row of ``templates.vectors``).
    retention_until : ndarray of shape (n_subjects,), float64
        POSIX seconds after which the subject is past retention.
    valid_until : dict of str to ndarray of shape (n_subjects,), float64
        Per purpose: POSIX seconds until which an active consent covers it
        (-inf when none does).
    """

    generation: int
    model_id: str
    subject_ids: list[str]
    templates: TemplateVectors
    owners: npt.NDArray[np.int64]
    retention_until: npt.NDArray[np.float64]
    valid_until: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    _squared_norms: npt.NDArray[np.float32] = field(init=False, repr=False)
    _one_per_subject: bool = field(init=False, repr=False)
    _most_per_subject: int = field(init=False, repr=False)
    _has_templates: npt.NDArray[np.bool_] = field(init=False, repr=False)
    _eligibility: dict[str | None, Eligibility] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._squared_norms = self.templates.squared_norms
        counts = np.bincount(self.owners, minlength=len(self.retention_until))
        self._has_templates = counts > 0
        self._most_per_subject = int(counts.max()) if len(counts) else 0
        self._one_per_subject = self._most_per_subject <= 1
        self._eligibility = {}

    @property
    def subject_count(self) -> int:
        """Subject positions of this index (``len(retention_until)``)."""
        return len(self.retention_until)

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """Protected templates, shape (n_templates, dim), float32."""
        return self.templates.vectors

    @classmethod
    def build(
        cls,
        generation: int,
        model_id: str,
        templates: Sequence[tuple[str, npt.NDArray[np.float32]]],
        retention_until: dict[str, datetime],
        consents: Sequence[ConsentRecord],
        purposes: Sequence[str],
        *,
        kind: str = "exact",
        exact_below: int = DEFAULT_EXACT_THRESHOLD,
    ) -> TemplateIndex:
        """Build from (subject_id, protected vector) pairs and the consent records."""
        vectors = TemplateVectors(model_id, kind, exact_below)
        live = [  # no ciphertext here: the vector itself tells a change
            LiveTemplate(str(n), subject_id, ciphertext_digest(np.asarray(vector).tobytes()))
            for n, (subject_id, vector) in enumerate(templates)
        ]
        vectors.sync(generation, live, lambda t: templates[int(t.template_id)][1])
        return cls.from_vectors(generation, vectors, retention_until, consents, purposes)

    @classmethod
    def from_vectors(
        cls,
        generation: int,
        templates: TemplateVectors,
        retention_until: dict[str, datetime],
        consents: Sequence[ConsentRecord],
        purposes: Sequence[str],
    ) -> TemplateIndex:
        """Wrap ``templates`` (synced to ``generation``) with the eligibility of its subjects.

        ``retention_until`` gives the retention deadline of every subject that
        may be searched (one missing, e.g. erased, never is); ``consents`` are
        every consent of them.
        """
        subject_ids = templates.subject_ids
        retention = np.array(
            [
                retention_until[s].timestamp() if s in retention_until else -math.inf
                for s in subject_ids
            ],
            dtype=np.float64,
        )
        valid = {p: np.full(len(subject_ids), -math.inf) for p in purposes}
        _merge_consents(valid, templates.codes, consents)
        return cls(
            generation,
            templates.model_id,
            subject_ids,
            templates,
            templates.owner_codes,
            retention,
            valid,
        )

    @classmethod
    def from_columns(
        cls,
        generation: int,
        templates: TemplateVectors,
        columns: EligibilityColumns,
        retention_days: int,
        purposes: Sequence[str],
    ) -> TemplateIndex:
        """:meth:`from_vectors` from the store's columns (:meth:`Store.eligibility_columns`).

        The same deadlines, computed without a record object or a Python loop
        per subject beyond parsing each distinct time once (the cold start of
        a large gallery).
        """
        codes = templates.codes
        count = len(templates.subject_ids)
        keep = timedelta(days=retention_days)
        retention = np.full(count, -math.inf)
        rows = _codes_of(codes, columns.subject_ids)
        found = rows >= 0
        deadlines = _posix_seconds(columns.last_interaction_at, keep)
        retention[rows[found]] = deadlines[found]
        valid = {p: np.full(count, -math.inf) for p in purposes}
        owners = _codes_of(codes, columns.consent_subject_ids)
        expiries = _posix_seconds(columns.consent_expires_at, timedelta(0))
        listed_purposes = columns.consent_purposes
        kinds = {p: n for n, p in enumerate(dict.fromkeys(listed_purposes))}  # few lists
        kind_of = np.fromiter(map(kinds.__getitem__, listed_purposes), np.int64,
                              len(listed_purposes))
        for listed, kind in kinds.items():
            chosen = (kind_of == kind) & (owners >= 0)
            for purpose in set(listed).intersection(valid):
                np.maximum.at(valid[purpose], owners[chosen], expiries[chosen])
        return cls(
            generation,
            templates.model_id,
            templates.subject_ids,
            templates,
            templates.owner_codes,
            retention,
            valid,
        )

    def updated(
        self,
        generation: int,
        retention_until: dict[str, datetime],
        refreshed: Collection[str],
        consents: Sequence[ConsentRecord],
    ) -> TemplateIndex:
        """The index after a change, its templates already brought to ``generation``.

        Only the subjects in ``refreshed`` get their times re-read: their
        retention deadline from ``retention_until`` (absent: never searched,
        e.g. erased) and their consents from ``consents`` (every consent of
        each of them). Subjects new to :attr:`templates` must be in
        ``refreshed``. The cost follows the number of refreshed subjects, plus
        a few numpy passes over the arrays.
        """
        templates = self.templates
        count = len(templates.subject_ids)
        grow = count - self.subject_count
        retention = np.concatenate([self.retention_until, np.full(grow, -math.inf)])
        valid = {
            p: np.concatenate([v, np.full(grow, -math.inf)]) for p, v in self.valid_until.items()
        }
        codes = templates.codes
        mine = [s for s in refreshed if s in codes]
        for subject_id in mine:
            code = codes[subject_id]
            deadline = retention_until.get(subject_id)
            retention[code] = -math.inf if deadline is None else deadline.timestamp()
            for until in valid.values():
                until[code] = -math.inf
        chosen = set(mine)
        _merge_consents(valid, codes, [c for c in consents if c.subject_id in chosen])
        return TemplateIndex(
            generation,
            templates.model_id,
            templates.subject_ids,
            templates,
            templates.owner_codes,
            retention,
            valid,
        )

    def eligible(self, purpose: str | None, now: datetime) -> npt.NDArray[np.bool_]:
        """Mask over subjects: consent covers ``purpose`` (any if None), within retention."""
        stamp = now.timestamp()
        if purpose is None:
            until = (
                np.maximum.reduce(list(self.valid_until.values()))
                if self.valid_until
                else np.full(self.subject_count, -math.inf)
            )
        else:
            until = self.valid_until.get(purpose, np.full(self.subject_count, -math.inf))
        mask: npt.NDArray[np.bool_] = (
            (until > stamp) & (self.retention_until > stamp) & self._has_templates
        )
        return mask

    def eligibility(self, purpose: str | None, now: datetime) -> Eligibility:
        """:meth:`eligible` with the template rows and ids, cached until the next deadline."""
        stamp = now.timestamp()
        cached = self._eligibility.get(purpose)
        if cached is not None and cached.since <= stamp < cached.until:
            return cached
        subjects_ok = self.eligible(purpose, now)
        deadlines = [self.retention_until]
        if purpose is None:
            deadlines += list(self.valid_until.values())
        elif purpose in self.valid_until:
            deadlines.append(self.valid_until[purpose])
        future = [d[d > stamp] for d in deadlines]
        until = min((float(f.min()) for f in future if len(f)), default=math.inf)
        rows_ok = subjects_ok[self.owners]
        subjects_ok.setflags(write=False)  # shared by every search in the window
        rows_ok.setflags(write=False)
        result = Eligibility(
            subjects_ok=subjects_ok,
            rows_ok=rows_ok,
            allowed=None if rows_ok.all() else self.templates.ids[rows_ok],
            searched=int(subjects_ok.sum()),
            since=stamp,
            until=until,
        )
        self._eligibility[purpose] = result
        return result

    def search(
        self,
        probe: npt.NDArray[np.float32],
        *,
        purpose: str | None,
        now: datetime,
        k: int,
        threshold: float,
        exclude: str | None = None,
        only: Collection[str] | None = None,
        normalizer: ScoreNormalizer | None = None,
    ) -> tuple[list[SearchHit], int]:
        """The ``k`` eligible subjects nearest to ``probe`` within ``threshold``.

        Parameters
        ----------
        probe : ndarray of shape (dim,)
            A protected (rotated) template of this index's model.
        exclude : str, optional
            A subject never to return.
        only : collection of str, optional
            When given, search these subjects alone (e.g. an event's members).
        normalizer : ScoreNormalizer, optional
            Applied to every probe-template distance before ``threshold`` and
            ranking (an operating point such as ``fmr-1e-3-fair``); it must be
            rotated like the templates (:meth:`ScoreNormalizer.rotated`).
            Distances are then exact for every eligible template.

        Returns
        -------
        hits : list of SearchHit
            Sorted by increasing distance (lower is more similar).
        searched : int
            How many subjects were eligible.
        """
        window = self.eligibility(purpose, now)
        subjects_ok, rows_ok, allowed = window.subjects_ok, window.rows_ok, window.allowed
        codes, count = self.templates.codes, self.subject_count
        excluded = codes.get(exclude, count) if exclude is not None else count
        if excluded < count or only is not None:
            subjects_ok = subjects_ok.copy()
            if excluded < count:
                subjects_ok[excluded] = False
            if only is not None:
                chosen = np.zeros(count, dtype=bool)
                chosen[[c for c in (codes.get(s, count) for s in only) if c < count]] = True
                subjects_ok &= chosen
            rows_ok = subjects_ok[self.owners]
            allowed = None if rows_ok.all() else self.templates.ids[rows_ok]
        searched = int(subjects_ok.sum())
        if not searched:
            return [], 0
        query = np.asarray(probe, dtype=np.float32)
        if normalizer is None and self.templates.is_approximate:
            return self._approximate_search(query, rows_ok, allowed, threshold, k), searched
        if rows_ok.all():  # the usual case: no copy of the template matrix
            vectors, owners, norms = self.vectors, self.owners, self._squared_norms
        else:
            rows = np.flatnonzero(rows_ok)
            vectors, owners = self.vectors[rows], self.owners[rows]
            norms = self._squared_norms[rows]
        if normalizer is not None:
            return self._normalized_search(vectors, owners, query, normalizer, threshold, k), (
                searched
            )
        # einsum, not BLAS: a multi-threaded matrix-vector product stalls on a busy
        # shared CPU (measured 14 ms instead of 0.1 ms at 10k templates), einsum runs
        # in this thread only and keeps latency predictable.
        squared = norms - 2.0 * np.einsum("ij,j->i", vectors, query) + float(query @ query)
        best = np.full(self.subject_count, np.inf, dtype=np.float32)
        if self._one_per_subject:
            best[owners] = squared
        else:
            np.minimum.at(best, owners, squared)
        # The expanded form above is fast but loses a little precision; decide
        # near the threshold with exact distances of the few subjects in reach.
        near = np.flatnonzero(best <= (threshold + 1e-3) ** 2)
        limit = max(4 * k, 64)
        if len(near) > limit:
            near = near[np.argpartition(best[near], limit)[:limit]]
        in_reach = np.flatnonzero(np.isin(owners, near))
        exact_rows = np.linalg.norm(vectors[in_reach].astype(np.float64) - query, axis=1)
        exact: dict[int, float] = {}
        for subject, distance in zip(owners[in_reach].tolist(), exact_rows.tolist(), strict=True):
            exact[subject] = min(distance, exact.get(subject, np.inf))
        within = sorted((d, i) for i, d in exact.items() if d <= threshold)[:k]
        return [SearchHit(self.subject_ids[i], d) for d, i in within], searched

    def _approximate_search(
        self,
        query: npt.NDArray[np.float32],
        rows_ok: npt.NDArray[np.bool_],
        allowed: npt.NDArray[np.int64] | None,
        threshold: float,
        k: int,
    ) -> list[SearchHit]:
        """Search through the vector index, filtered to the eligible templates exactly.

        The eligible templates' ids go to the index as ``allowed`` (sorted, so
        no copy or sort there): no other template can come back, and a small
        eligible set is searched exactly by the index itself. Asking for
        ``(k + 2) * m`` templates, with ``m`` the most templates any subject
        has, is enough for the best ``k`` subjects; their distances are then
        recomputed exactly (float64) before the threshold decides.
        """
        store = self.templates
        fetch = (k + 2) * max(self._most_per_subject, 1)
        _, found = store.search(query, fetch, allowed)
        rows = store.rows_of(found)
        # The index already returns allowed ids only; checking again here keeps
        # eligibility independent of the index implementation.
        rows = rows[(store.ids[rows] == found) & rows_ok[rows]]
        exact_rows = np.linalg.norm(
            store.vectors[rows].astype(np.float64) - query.astype(np.float64), axis=1
        )
        exact: dict[int, float] = {}
        for subject, distance in zip(
            self.owners[rows].tolist(), exact_rows.tolist(), strict=True
        ):
            exact[subject] = min(distance, exact.get(subject, np.inf))
        within = sorted((d, i) for i, d in exact.items() if d <= threshold)[:k]
        return [SearchHit(self.subject_ids[i], d) for d, i in within]

    def _normalized_search(
        self,
        vectors: npt.NDArray[np.float32],
        owners: npt.NDArray[np.int64],
        query: npt.NDArray[np.float32],
        normalizer: ScoreNormalizer,
        threshold: float,
        k: int,
    ) -> list[SearchHit]:
        """Exact normalized distances of every given template; best per subject."""
        raw = np.linalg.norm(vectors.astype(np.float64) - query.astype(np.float64), axis=1)
        probe_cluster = normalizer.clusters_of(query)
        distances = normalizer.normalize_assigned(
            raw, np.repeat(probe_cluster, len(raw)), normalizer.clusters_of(vectors)
        )
        best = np.full(self.subject_count, np.inf)
        np.minimum.at(best, owners, distances)
        within = np.flatnonzero(best <= threshold)
        order = within[np.argsort(best[within], kind="stable")][:k]
        return [SearchHit(self.subject_ids[i], float(best[i])) for i in order]


def _codes_of(codes: dict[str, int], subject_ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """Subject number of each of ``subject_ids`` (-1 for a subject without templates)."""
    return np.fromiter(map(codes.get, subject_ids, repeat(-1)), np.int64, len(subject_ids))


def _posix_seconds(stamps: Sequence[str], after: timedelta) -> npt.NDArray[np.float64]:
    """POSIX seconds of ``after`` past each ISO time, each distinct string parsed once."""
    parsed = {s: (datetime.fromisoformat(s) + after).timestamp() for s in set(stamps)}
    return np.fromiter(map(parsed.__getitem__, stamps), np.float64, len(stamps))


def _merge_consents(
    valid: dict[str, npt.NDArray[np.float64]],
    codes: dict[str, int],
    consents: Sequence[ConsentRecord],
) -> None:
    """Raise each subject's per-purpose validity to the expiry of its active consents."""
    count = min((len(v) for v in valid.values()), default=0)
    for consent in consents:
        code = codes.get(consent.subject_id, count)
        if code >= count or consent.withdrawn_at is not None:
            continue
        until = datetime.fromisoformat(consent.expires_at).timestamp()
        for purpose in consent.purposes:
            if purpose in valid and until > valid[purpose][code]:
                valid[purpose][code] = until
