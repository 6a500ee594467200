"""The one template search of a gallery: identify, verify, the duplicate check and the gate.

:func:`search_templates` finds the eligible subjects nearest to a protected
probe template. Eligible means: not erased, within retention, with an active,
unexpired consent covering the purpose (any purpose when it is None), holding
templates of the probe's model, and, when asked, among ``only`` and not
``exclude``. A search not restricted to ``only`` never returns a subject
enrolled for one event only (:func:`event_only_subjects`): their consent covers
that event, so only its gate, which names its members, searches them.
Distances are Euclidean (lower is more similar), normalized when the operating
point carries a score normalizer (``fmr-1e-3-fair``), and compared with the
point's threshold.

Where it searches:

* a few named subjects (``only`` with at most :data:`DIRECT_SCAN_MAX_SUBJECTS`,
  e.g. a 1:1 verification): their templates are read, decrypted and compared
  directly, without loading the gallery's index;
* ``server_side_search`` galleries (PostgreSQL + pgvector): in the database;
* otherwise the process's in-memory index (:mod:`.indexes`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from .. import crypto
from ..errors import InvalidParameter
from ..matching import OperatingPoint
from ..score_normalization import ScoreNormalizer
from ..store.base import Store, TemplateRecord
from ..store.postgres import PostgresStore
from .consent import consent_status
from .index import SearchHit
from .parts import GalleryParts
from .probes import protected_normalizer

#: Searches restricted to at most this many subjects read their templates directly.
DIRECT_SCAN_MAX_SUBJECTS = 32


@dataclass(frozen=True)
class SearchResult:
    """What one template search found.

    Attributes
    ----------
    hits : list of SearchHit
        Best (smallest) distance per subject, within the threshold, increasing.
    searched : int
        Eligible subjects searched (-1 when not counted).
    generation : int
        The store generation searched.
    """

    hits: list[SearchHit]
    searched: int
    generation: int


def event_only_subjects(parts: GalleryParts, generation: int | None = None) -> frozenset[str]:
    """The subjects enrolled for one event only, of the events not yet closed.

    Closing an event erases its event-only subjects, so these are all of them.
    With the store's ``generation`` just read, the set read at that generation
    is reused (any change to an event's members moves the generation), so a
    search costs no event query while the events stay as they are. A set read
    inside a write transaction is not kept: should the transaction roll back,
    its generation would be given again to another change.
    """
    memo = parts.event_only
    if generation is not None and memo.generation == generation:
        return memo.subjects
    store = parts.store
    with store.snapshot():
        read_at = store.generation()
        subjects = frozenset(_event_only_owners(store))
    if not store.in_transaction():
        memo.generation, memo.subjects = read_at, subjects
    return subjects


def event_only_owner(store: Store, subject_id: str) -> str | None:
    """The event ``subject_id`` was enrolled for only, or None (an ordinary subject).

    Only events not yet closed can hold one: closing erases its event-only subjects.
    """
    with store.snapshot():
        return _event_only_owners(store).get(subject_id)


def _event_only_owners(store: Store) -> dict[str, str]:
    """Each event-only subject of the events not yet closed, with its event."""
    return {
        member.subject_id: event.event_id
        for event in store.list_events()
        if event.closed_at is None
        for member in store.event_members(event.event_id)
        if member.event_only
    }


def search_templates(
    parts: GalleryParts,
    probe: npt.NDArray[np.float32],
    model_id: str,
    *,
    purpose: str | None,
    point: OperatingPoint,
    secret: bytes,
    k: int,
    threshold: float | None = None,
    exclude: str | None = None,
    only: Collection[str] | None = None,
    count_searched: bool = True,
    generation: int | None = None,
) -> SearchResult:
    """The ``k`` eligible subjects nearest to ``probe`` (see module docstring).

    Parameters
    ----------
    probe : ndarray of shape (dim,)
        A template protected with ``secret`` (:func:`facetrust.crypto.protect`).
    model_id : str
        The probe's model; only templates of this model are compared.
    purpose : str or None
        The consented purpose searched for; None accepts any active consent
        (the enrolment duplicate check).
    point : OperatingPoint
        Gives the threshold and, for a ``-fair`` point, the score normalizer.
    secret : bytes
        The gallery's template secret (the normalizer is rotated with it).
    k : int
        Most subjects to return.
    threshold : float, optional
        Overrides ``point.threshold`` (``math.inf`` returns the nearest
        subjects whatever their distance).
    exclude : str, optional
        A subject never to return.
    only : collection of str, optional
        Search these subjects alone (a verification's subject, an event's members).
        Without it, subjects enrolled for an event only are never returned nor
        counted as searched.
    count_searched : bool
        Whether a database search counts the eligible subjects (costs a query).
    generation : int, optional
        The store's generation, when the caller has just read it.
    """
    hidden = (
        event_only_subjects(parts, generation) - {exclude} if only is None else frozenset()
    )
    found = _search_templates(
        parts, probe, model_id, purpose=purpose, point=point, secret=secret,
        k=k + len(hidden), threshold=threshold, exclude=exclude, only=only,
        count_searched=count_searched, generation=generation,
    )
    if not hidden:
        return found
    searched = found.searched
    if searched > 0:  # -1: not counted
        eligible, _ = eligible_templates(parts, hidden, model_id, purpose)
        searched = max(0, searched - len(eligible))
    hits = [h for h in found.hits if h.subject_id not in hidden][:k]
    return SearchResult(hits, searched, found.generation)


def _search_templates(
    parts: GalleryParts,
    probe: npt.NDArray[np.float32],
    model_id: str,
    *,
    purpose: str | None,
    point: OperatingPoint,
    secret: bytes,
    k: int,
    threshold: float | None,
    exclude: str | None,
    only: Collection[str] | None,
    count_searched: bool,
    generation: int | None,
) -> SearchResult:
    limit = point.threshold if threshold is None else threshold
    normalizer = protected_normalizer(point, secret, int(probe.shape[0]))
    if only is not None and len(only) <= DIRECT_SCAN_MAX_SUBJECTS:
        return _scan_subjects(parts, probe, model_id, purpose, only, exclude, k, limit, normalizer)
    if parts.config.server_side_search:
        if normalizer is not None:
            raise InvalidParameter(
                f"The operating point {point.name!r} normalizes scores, which the database "
                "search (server_side_search) cannot do yet. Use a plain operating point such "
                "as 'fmr-1e-3' for this gallery, or turn server-side search off."
            )
        return _search_database(
            parts, probe, model_id, purpose, only, exclude, k, limit, count_searched
        )
    index = parts.indexes.get(model_id, generation=generation)
    hits, searched = index.search(
        probe, purpose=purpose, now=parts.now(), k=k, threshold=limit,
        exclude=exclude, only=only, normalizer=normalizer,
    )
    return SearchResult(hits, searched, index.generation)


def search_probe(
    parts: GalleryParts,
    vector: npt.NDArray[np.float32],
    model_id: str,
    *,
    purpose: str | None,
    point: OperatingPoint,
    k: int,
    threshold: float | None = None,
    exclude: str | None = None,
    only: Collection[str] | None = None,
) -> SearchResult:
    """:func:`search_templates` for an unprotected probe ``vector`` (an embedding).

    The probe is protected with the template secret current when the search
    starts. Should the secret be renewed before the search reads the store
    (the generations differ and the secret with them), the search runs again
    with the new one, so the probe and the templates are always compared under
    one secret.
    """
    while True:
        generation, secret = parts.keyring.current_template_secret()
        found = search_templates(
            parts, crypto.protect(vector, secret), model_id, purpose=purpose, point=point,
            secret=secret, k=k, threshold=threshold, exclude=exclude, only=only,
            generation=generation,
        )
        if found.generation == generation or parts.keyring.template_secret() == secret:
            return found


def eligible_templates(
    parts: GalleryParts,
    subject_ids: Collection[str],
    model_id: str,
    purpose: str | None,
    exclude: str | None = None,
) -> tuple[dict[str, list[TemplateRecord]], int]:
    """The templates of ``model_id`` of each eligible subject among ``subject_ids``.

    Returns the templates by subject (subjects without such templates left
    out) and the store generation they were read at.
    """
    now = parts.now()
    found: dict[str, list[TemplateRecord]] = {}
    store = parts.store
    with store.snapshot():
        generation = store.generation()
        for subject_id in sorted(set(subject_ids) - {exclude}):
            record = store.get_subject(subject_id)
            if record is None or record.erased_at is not None:
                continue
            if parts.retention_until(record) <= now:
                continue
            if not any(
                consent_status(c, now) == "active" and (purpose is None or purpose in c.purposes)
                for c in store.consents_of(subject_id)
            ):
                continue
            mine = [t for t in store.templates_of(subject_id) if t.model_id == model_id]
            if mine:
                found[subject_id] = mine
    return found, generation


def _scan_subjects(
    parts: GalleryParts,
    probe: npt.NDArray[np.float32],
    model_id: str,
    purpose: str | None,
    only: Collection[str],
    exclude: str | None,
    k: int,
    threshold: float,
    normalizer: ScoreNormalizer | None,
) -> SearchResult:
    """Exact search over a few subjects' templates, decrypted for this search only."""
    eligible, generation = eligible_templates(parts, only, model_id, purpose, exclude)
    query = np.asarray(probe, dtype=np.float64)
    best: list[tuple[float, str]] = []
    for subject_id, templates in eligible.items():
        data_key = parts.keyring.data_key(subject_id)
        if data_key is None:
            continue  # crypto-shredded: unreadable
        stored = np.stack([parts.keyring.open_template(t, data_key) for t in templates])
        distances = np.linalg.norm(stored.astype(np.float64) - query, axis=1)
        if normalizer is not None:
            distances = normalizer.normalize(distances, probe, stored)
        distance = float(np.min(distances))
        if distance <= threshold:
            best.append((distance, subject_id))
    best.sort()
    hits = [SearchHit(subject_id, distance) for distance, subject_id in best[:k]]
    return SearchResult(hits, len(eligible), generation)


def _search_database(
    parts: GalleryParts,
    probe: npt.NDArray[np.float32],
    model_id: str,
    purpose: str | None,
    only: Collection[str] | None,
    exclude: str | None,
    k: int,
    threshold: float,
    count_searched: bool,
) -> SearchResult:
    """Search by the store's pgvector HNSW index (approximate nearest neighbours).

    The eligibility rules are decided in SQL; an ``only`` set is first reduced
    to its eligible subjects here, so the count searched is exact.
    """
    store = vector_store(parts)
    now = parts.now()
    cutoff = now - timedelta(days=parts.config.retention_days)
    members: Sequence[str] | None = None
    if only is not None:
        eligible, _ = eligible_templates(parts, only, model_id, purpose, exclude)
        members = sorted(eligible)
        if not members:
            with store.snapshot():
                return SearchResult([], 0, store.generation())
    with store.snapshot():
        generation = store.generation()
        found, searched = store.search_vectors(
            probe, model_id=model_id, purpose=purpose, now=now.isoformat(),
            retention_cutoff=cutoff.isoformat(), k=k, exclude=exclude, only=members,
            count_searched=count_searched and members is None,
        )
    if members is not None:
        searched = len(members)
    hits = [SearchHit(s, d) for s, d in found if d <= threshold]
    return SearchResult(hits, searched, generation)


def vector_store(parts: GalleryParts) -> PostgresStore:
    """The gallery's store as a PostgreSQL store, which ``server_side_search`` needs.

    Raises
    ------
    InvalidParameter
        The gallery's store is not PostgreSQL.
    """
    if not isinstance(parts.store, PostgresStore):
        raise InvalidParameter(
            "The 'server_side_search' setting needs a PostgreSQL gallery (database_url); "
            "this gallery's store is a "
            + type(parts.store).__name__
            + ". Turn it off, or move the gallery to PostgreSQL."
        )
    return parts.store


def put_server_side_vectors(
    parts: GalleryParts, rows: Sequence[tuple[TemplateRecord, npt.NDArray[np.float32]]]
) -> None:
    """With ``server_side_search``, store protected vectors for the database search."""
    if parts.config.server_side_search:
        vector_store(parts).put_vectors(
            [(t.template_id, t.subject_id, t.model_id, v) for t, v in rows]
        )

