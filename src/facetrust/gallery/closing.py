"""Closing identifications nobody can decide any more.

A candidate may be confirmed (or rejected) only while its subject has an
active, unexpired consent covering the search's purpose and is within
retention. When every candidate still awaiting review has lost that (consent
withdrawn or expired, subject erased, retention ended), nobody can decide the
identification: it is *closed*. Closing marks it decided (so it leaves every
review queue) with each such candidate and why (``closed_because`` in the
store), appends an ``identification.closed`` audit event saying the same, and
then shreds its kept probe photo (:func:`.pending.discard_probe`: a photo of a
person nobody may now be matched to).

Where it happens, so that the promise holds on every entry point:

* in the same transaction as the change that ends eligibility when there is
  one: a consent withdrawal (:func:`.erasure.withdraw_consent`), an erasure
  (:func:`.erasure.erase_subject`), and a review that rejects the last
  eligible candidate (:func:`.identification.review`);
* on every read of the review desk (queue, case, photos, a review attempt),
  because an expiry or the end of retention is no event: the first reviewer to
  look closes the case, so no reviewer is ever shown one nobody can decide;
* in the retention sweep (:func:`.erasure.sweep_retention`), which closes the
  cases nobody looks at, so their probes go within the hour.

The rules are :func:`.subjects.require_active_consent`'s (via
:func:`.consent.require_consent` and the retention limit); the reasons are
plain English ("consent to boarding withdrawn", "the subject was erased").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from ..errors import ConsentError
from ..store.base import ConsentRecord, IdentificationRecord
from .consent import consent_status, require_consent
from .parts import GalleryParts
from .pending import discard_probe
from .review_states import candidate_reviews, quorum_of

__all__ = [
    "CLOSED_PROBE_REASON",
    "PAGE",
    "close_undecidable",
    "close_undecidable_now",
    "closed_message",
    "ineligible_candidates",
    "ineligible_message",
    "shred_closed_probes",
    "sweep_undecidable",
    "undecidable",
    "undecided_with_candidate",
]

#: The reason audited when the probe of a closed identification is deleted.
CLOSED_PROBE_REASON = "identification closed: no candidate is eligible any more"
#: Identifications read at a time.
PAGE = 5000


def closed_message(identification_id: str) -> str:
    """What a reviewer is told about a closed identification."""
    return (
        f"Identification {identification_id!r} was closed because none of its candidates is "
        "eligible any more (consent for its purpose withdrawn or expired, subject erased, or "
        "retention period ended): nobody may be confirmed, so it left the review queue and "
        "its probe photo was deleted. Run a new identification if the person must still be "
        "identified."
    )


def ineligible_message(identification_id: str, subject_id: str, why: str) -> str:
    """What a reviewer is told about a candidate who may not be decided any more."""
    return (
        f"Candidate {subject_id!r} of identification {identification_id!r} is no longer "
        f"eligible ({why}): it can be neither confirmed nor rejected, and its reference "
        "photo is not shown. Review the identification's other candidates."
    )


def _consent_reason(consents: Sequence[ConsentRecord], purpose: str, now: datetime) -> str:
    covering = [c for c in consents if purpose in c.purposes]
    if not covering:
        return f"no consent to {purpose}"
    status = consent_status(covering[-1], now)
    return f"consent to {purpose} {'withdrawn' if status == 'withdrawn' else 'expired'}"


def ineligible_candidates(
    parts: GalleryParts, purpose: str, subject_ids: Iterable[str]
) -> dict[str, str]:
    """Of ``subject_ids``, those who may not be confirmed for ``purpose`` now, each with
    why in plain English; the rules of :func:`.subjects.require_active_consent` with
    ``within_retention``. A few queries for them all; call inside a snapshot or
    transaction."""
    ids = list(dict.fromkeys(subject_ids))
    if not ids:
        return {}
    now = parts.now()
    records = {r.subject_id: r for r in parts.store.get_subjects(ids)}
    consents: dict[str, list[ConsentRecord]] = {}
    for consent in sorted(parts.store.consents_of_subjects(ids), key=lambda c: c.granted_at):
        consents.setdefault(consent.subject_id, []).append(consent)
    found: dict[str, str] = {}
    for subject_id in ids:
        record = records.get(subject_id)
        if record is None or record.erased_at is not None:
            found[subject_id] = "the subject was erased"
        elif parts.retention_until(record) <= now:
            found[subject_id] = "retention period ended"
        else:
            of_subject = consents.get(subject_id, [])
            try:
                require_consent(of_subject, purpose, now, subject_id)
            except ConsentError:
                found[subject_id] = _consent_reason(of_subject, purpose, now)
    return found


def undecidable(parts: GalleryParts, record: IdentificationRecord) -> dict[str, str] | None:
    """If nobody can decide the undecided identification ``record`` (every candidate
    still pending is ineligible), those candidates and why; else None."""
    states = candidate_reviews(record, parts.store.reviews_of(record.identification_id),
                               quorum_of(record, parts.config.review_quorum))
    if any(state == "confirmed" for state, _, _ in states.values()):
        return None
    pending = [s for s, (state, _, _) in states.items() if state == "pending"]
    if not pending:
        return None
    reasons = ineligible_candidates(parts, record.purpose, pending)
    return reasons if len(reasons) == len(pending) else None


def _undecided(
    parts: GalleryParts, identification_ids: Iterable[str]
) -> Iterator[IdentificationRecord]:
    for identification_id in dict.fromkeys(identification_ids):
        record = parts.store.get_identification(identification_id)
        if record is not None and parts.store.identification_decided_at(identification_id) is None:
            yield record


def close_undecidable(
    parts: GalleryParts, identification_ids: Iterable[str], *, actor: str
) -> list[str]:
    """Close those of ``identification_ids`` nobody can decide (marked decided and
    audited); returns their ids. Runs inside the caller's store transaction when
    there is one (the closure commits with the change that caused it), else in one
    of its own; call :func:`shred_closed_probes` once it has committed."""
    closed: list[str] = []
    with parts.store.transaction():
        stamp = parts.stamp()
        for record in _undecided(parts, identification_ids):
            identification_id = record.identification_id
            reasons = undecidable(parts, record)
            if reasons is None:
                continue
            if parts.store.close_identification(identification_id, stamp, reasons):
                parts.audit.append(
                    "identification.closed", actor=actor, purpose=record.purpose,
                    subject_ids=list(reasons), identification_id=identification_id,
                    case_ref=record.case_ref, ineligible=reasons,
                )
                closed.append(identification_id)
    return closed


def shred_closed_probes(parts: GalleryParts, closed: Iterable[str], *, actor: str) -> int:
    """Delete the kept probes of the ``closed`` identifications (after the commit that
    closed them); returns how many went."""
    return sum(discard_probe(parts, identification_id, actor=actor, reason=CLOSED_PROBE_REASON)
               for identification_id in closed)


def close_undecidable_now(
    parts: GalleryParts, identification_ids: Iterable[str], *, actor: str
) -> list[str]:
    """:func:`close_undecidable` in a transaction of its own, then the probes shredded.

    Looks first in a snapshot, so that a read of the review desk takes the write
    lock only when there is something to close."""
    with parts.store.snapshot():
        due = [r.identification_id for r in _undecided(parts, identification_ids)
               if undecidable(parts, r) is not None]
    if not due:
        return []
    closed = close_undecidable(parts, due, actor=actor)
    shred_closed_probes(parts, closed, actor=actor)
    return closed


def _undecided_pages(
    parts: GalleryParts, naming: str | None = None
) -> Iterator[list[IdentificationRecord]]:
    """Every undecided identification (with ``naming``, those that returned that
    subject as a candidate), a page at a time, oldest first; each page is read, and
    used by the caller, in a store snapshot of its own."""
    after: tuple[str, str] | None = None
    while True:
        with parts.store.snapshot():
            page = parts.store.undecided_identifications(after, limit=PAGE, naming=naming)
            yield page
        if len(page) < PAGE:
            return
        after = (page[-1].started_at, page[-1].identification_id)


def undecided_with_candidate(parts: GalleryParts, subject_id: str) -> list[str]:
    """Undecided identifications that returned ``subject_id`` as a candidate."""
    return [record.identification_id
            for page in _undecided_pages(parts, naming=subject_id) for record in page
            if any(candidate[0] == subject_id for candidate in record.candidates)]


def sweep_undecidable(parts: GalleryParts, *, actor: str) -> int:
    """Close every identification nobody can decide (the retention sweep's part: an
    expiry or the end of retention is no event); returns how many closed."""
    due = [record.identification_id for page in _undecided_pages(parts) for record in page
           if undecidable(parts, record) is not None]
    closed = close_undecidable(parts, due, actor=actor) if due else []
    shred_closed_probes(parts, closed, actor=actor)
    return len(closed)
