"""The review desk: the queue of identifications awaiting review, one case at a
time, and the photos a reviewer compares (least privilege, every view audited).

* :func:`review_queue`: the pending identifications one reviewer may review
  (not their own searches unless ``config.searcher_may_review``), oldest
  first, in keyset pages.
* :func:`review_case`: one identification with each candidate's review state,
  in plain English (``"1 of 2 confirmations; waiting for a second reviewer"``).
* :func:`reference_photo`: a candidate's enrolled photo when photos are kept,
  decrypted for display only, to a reviewer who may review the identification,
  only for one of its candidates, only while it is pending.
* :func:`probe_photo`: the kept probe of a pending identification and the
  detected face box (:mod:`.pending`), on the same terms.

Each view is audited (``review.queue``, ``identification.view``,
``reference.view``, ``pending-probe.view``), and so is each refused attempt
(the same kind with ``.refused``). Each first closes the identifications it
reads that nobody can decide any more (:mod:`.closing`: a consent expiry or the
end of retention is no event), so no reviewer is shown one: a closed case is
not queued, and opening it says why it closed; an ineligible candidate of a
case still pending is shown as "No longer eligible (...)".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from .. import crypto
from ..errors import (
    InvalidParameter,
    ReviewClosed,
    ReviewNotAllowed,
    UnknownIdentification,
)
from ..faces import Box
from ..store.base import IdentificationRecord
from .checks import check_name, is_same_name
from .closing import (
    close_undecidable_now,
    closed_message,
    ineligible_candidates,
    ineligible_message,
)
from .parts import GalleryParts
from .pending import open_probe
from .refusals import audit_refusal
from .review_states import candidate_reviews, identification_state, quorum_of

__all__ = [
    "NO_REFERENCE_PHOTO",
    "CandidateReview",
    "ProbePhoto",
    "ReferencePhoto",
    "ReviewCase",
    "ReviewQueue",
    "probe_photo",
    "reference_photo",
    "review_case",
    "review_queue",
]

#: What a reviewer is told when a candidate's photos were not kept at enrolment.
NO_REFERENCE_PHOTO = (
    "No reference photo kept: confirm against an identity document before confirming."
)
#: What a reviewer is told when the probe photo is not (or no longer) kept.
NO_PROBE_PHOTO = (
    "The probe photo is not kept (it was a template, the policy keeps none, or its time "
    "limit passed): compare the person in front of you or the case file instead."
)

_ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _ordinal(n: int) -> str:
    return _ORDINALS[n - 1] if n <= len(_ORDINALS) else f"{n}th"


def _names(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class CandidateReview:
    """One candidate of an identification and where its review stands.

    ``distance`` is the template distance to the probe (lower is more similar).
    ``status`` is one of :data:`.review_states.REVIEW_STATES`; an ``ineligible``
    candidate's ``ineligible_reason`` says why it may not be decided any more
    ("consent to boarding withdrawn"). ``photo_kept`` is None where it was not
    looked up (the queue). ``settled`` says the identification as a whole is
    decided (by this or another candidate, or closed).
    """

    subject_id: str
    rank: int
    distance: float
    status: str
    confirmed_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    required: int
    photo_kept: bool | None = None
    settled: bool = False
    ineligible_reason: str | None = None

    @property
    def summary(self) -> str:
        """The review state in plain English, with the next step."""
        if self.status == "ineligible":
            return f"No longer eligible ({self.ineligible_reason}): it cannot be confirmed."
        if self.settled and self.status == "pending":
            return "Not decided: the identification was decided on another candidate."
        if self.status == "rejected":
            return f"Rejected by {_names(self.rejected_by)}."
        if self.status == "confirmed":
            return f"Confirmed by {_names(self.confirmed_by)}."
        done = len(self.confirmed_by)
        waiting = f"waiting for a {_ordinal(done + 1)} reviewer"
        return f"{done} of {self.required} confirmations; {waiting}."

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(confirmed_by=list(self.confirmed_by), rejected_by=list(self.rejected_by),
                      summary=self.summary)
        return record


@dataclass(frozen=True)
class ReviewCase:
    """An identification as a reviewer sees it.

    Attributes
    ----------
    identification_id, purpose, case_ref : str
    searched_by : str
        Who ran the search.
    started_at : str
        ISO 8601 time of the search.
    age_s : int
        Seconds since the search.
    status : str
        ``pending``, ``confirmed``, ``rejected``, ``closed`` (every candidate left
        undecided is no longer eligible: nobody can decide it) or ``no-candidate``
        (:data:`.review_states.IDENTIFICATION_STATES`).
    candidates : tuple of CandidateReview
        In rank order.
    may_review : bool
        Whether the asking reviewer may review it now; ``reason`` says why not.
    probe_kept : bool or None
        Whether the probe photo is kept (None where not looked up).
    audit_seq : int
        The audit event of this view.
    review_quorum : int
        The distinct confirmations that decide a candidate: the gallery's quorum
        when the search was made (a later change applies to later searches only).
    """

    identification_id: str
    purpose: str
    case_ref: str | None
    searched_by: str
    started_at: str
    age_s: int
    status: str
    candidates: tuple[CandidateReview, ...]
    may_review: bool
    reason: str | None
    probe_kept: bool | None
    audit_seq: int
    review_quorum: int

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["candidates"] = [c.to_dict() for c in self.candidates]
        return record


@dataclass(frozen=True)
class ReviewQueue:
    """One page of the review queue, oldest search first.

    ``next_after`` is the cursor of the next page (None on the last one).
    """

    cases: tuple[ReviewCase, ...]
    next_after: str | None
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"cases": [c.to_dict() for c in self.cases], "next_after": self.next_after,
                "audit_seq": self.audit_seq}


@dataclass(frozen=True)
class ReferencePhoto:
    """A candidate's enrolled photo for a reviewer, or why there is none.

    ``photo`` is the decrypted, encoded photo (for display only: never cache
    or store it), None when the subject's photos were not kept; ``message``
    then tells the reviewer what to do instead.
    """

    identification_id: str
    subject_id: str
    photo: bytes | None
    message: str | None
    audit_seq: int


@dataclass(frozen=True)
class ProbePhoto:
    """The kept probe of a pending identification and its detected face box, or why not."""

    identification_id: str
    photo: bytes | None
    box: Box | None
    message: str | None
    audit_seq: int


def _record(parts: GalleryParts, identification_id: str) -> IdentificationRecord:
    record = parts.store.get_identification(identification_id)
    if record is None:
        raise UnknownIdentification(
            f"No identification {identification_id!r} in this gallery. Open one from the "
            "review queue, or use the identification_id an identify returned."
        )
    return record


def _why_not(
    parts: GalleryParts, record: IdentificationRecord, reviewer: str,
    states: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]],
) -> str | None:
    """Why ``reviewer`` may not review ``record`` (None if they may), given the
    candidates' ``states`` (:func:`candidate_reviews`)."""
    if is_same_name(reviewer, record.actor) and not parts.config.searcher_may_review:
        return (
            f"{reviewer} ran this identification, and this gallery's policy is that its "
            "candidates are reviewed by other people. Ask another operator to review it."
        )
    pending = [confirmed for state, confirmed, _ in states.values() if state == "pending"]
    if pending and all(any(is_same_name(reviewer, c) for c in confirmed)
                       for confirmed in pending):
        # least privilege: the photos go only to reviewers with a decision still to give
        return (
            f"{reviewer} has reviewed every candidate still awaiting a decision; other "
            "reviewers decide the rest. The photos are shown only to reviewers with a "
            "decision to give."
        )
    return None


def _ineligible(parts: GalleryParts, record: IdentificationRecord) -> dict[str, str]:
    """The candidates of ``record`` who may not be decided (any more), and why: those
    it was closed for, or, while it is undecided, those ineligible now."""
    identification_id = record.identification_id
    closure = parts.store.identification_closure(identification_id)
    if closure is not None:
        return closure
    if parts.store.identification_decided_at(identification_id) is not None:
        return {}
    return ineligible_candidates(parts, record.purpose, [c[0] for c in record.candidates])


def _case(
    parts: GalleryParts, record: IdentificationRecord, reviewer: str, seq: int,
    *, details: bool,
) -> ReviewCase:
    quorum = quorum_of(record, parts.config.review_quorum)
    ineligible = _ineligible(parts, record)
    states = candidate_reviews(record, parts.store.reviews_of(record.identification_id), quorum,
                               ineligible)
    candidates = tuple(
        CandidateReview(
            subject_id, rank, distance, *states[subject_id], required=quorum,
            photo_kept=bool(parts.store.photos_of(subject_id)) if details else None,
            ineligible_reason=(ineligible[subject_id]
                               if states[subject_id][0] == "ineligible" else None),
        )
        for subject_id, distance, rank in record.candidates
    )
    status = identification_state(c.status for c in candidates)
    if status != "pending":
        candidates = tuple(replace(c, settled=True) for c in candidates)
    reason = _why_not(parts, record, reviewer, states)
    if status == "closed":
        reason = closed_message(record.identification_id)
    elif reason is None and status != "pending":
        reason = f"This identification is {status}; review decisions are final."
    age = parts.now() - datetime.fromisoformat(record.started_at)
    probe_kept = None
    if details:
        probe_kept = parts.store.get_pending_probe(record.identification_id) is not None
    return ReviewCase(
        record.identification_id, record.purpose, record.case_ref, record.actor,
        record.started_at, max(0, int(age.total_seconds())), status, candidates,
        reason is None, reason, probe_kept, seq, quorum,
    )


def _open_for_review(
    parts: GalleryParts, identification_id: str, reviewer: str
) -> IdentificationRecord:
    """The identification, if ``reviewer`` may review it now; else the refusal."""
    record = _record(parts, identification_id)
    states = candidate_reviews(record, parts.store.reviews_of(identification_id),
                               quorum_of(record, parts.config.review_quorum),
                               _ineligible(parts, record))
    reason = _why_not(parts, record, reviewer, states)
    if reason is not None:
        raise ReviewNotAllowed(reason)
    if parts.store.identification_closure(identification_id) is not None:
        raise ReviewClosed(closed_message(identification_id))
    if parts.store.identification_decided_at(identification_id) is not None:
        raise ReviewClosed(
            f"Identification {identification_id!r} is already decided: its photos are shown "
            "only while it awaits review. Open the review page to see the decision."
        )
    return record


def review_queue(
    parts: GalleryParts, *, reviewer: str, after: str | None = None, limit: int = 25
) -> ReviewQueue:
    """See :meth:`Gallery.review_queue`."""
    reviewer = check_name(reviewer, "reviewer")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise InvalidParameter(
            f"The 'limit' of the review queue must be an int in [1, 200]. Got {limit!r} instead."
        )
    cursor: tuple[str, str] | None = None
    if after:
        started, _, last_id = after.partition("|")
        if not last_id:
            raise InvalidParameter(
                f"The 'after' cursor {after!r} is not one the review queue returned. Start "
                "from the first page."
            )
        cursor = (started, last_id)
    cases: list[ReviewCase] = []
    undecidable: list[str] = []
    exhausted = False
    with parts.store.snapshot():
        while len(cases) < limit and not exhausted:
            batch = parts.store.undecided_identifications(cursor, limit)
            exhausted = len(batch) < limit
            for index, record in enumerate(batch):
                cursor = (record.started_at, record.identification_id)
                case = _case(parts, record, reviewer, 0, details=False)
                if case.status == "closed":  # nobody can decide it: closed below, not listed
                    undecidable.append(record.identification_id)
                # listed while a candidate awaits a review this reviewer has not given
                if case.may_review and any(
                    c.status == "pending"
                    and not any(is_same_name(reviewer, r) for r in c.confirmed_by)
                    for c in case.candidates
                ):
                    cases.append(case)
                if len(cases) == limit:
                    exhausted = exhausted and index == len(batch) - 1
                    break
    close_undecidable_now(parts, undecidable, actor=reviewer)
    event = parts.audit.append(
        "review.queue", actor=reviewer,
        identification_ids=[c.identification_id for c in cases], listed=len(cases),
    )
    next_after = f"{cursor[0]}|{cursor[1]}" if not exhausted and cursor else None
    listed = tuple(replace(c, audit_seq=event.seq) for c in cases)
    return ReviewQueue(listed, next_after, event.seq)


def review_case(parts: GalleryParts, identification_id: str, *, reviewer: str) -> ReviewCase:
    """See :meth:`Gallery.review_case`."""
    reviewer = check_name(reviewer, "reviewer")
    close_undecidable_now(parts, [identification_id], actor=reviewer)
    with (
        audit_refusal(parts.audit, "identification.view", reviewer, None, [],
                      identification_id=identification_id),
        parts.store.snapshot(),
    ):
        record = _record(parts, identification_id)
        draft = _case(parts, record, reviewer, 0, details=True)
    event = parts.audit.append(
        "identification.view", actor=reviewer, purpose=record.purpose,
        subject_ids=[c.subject_id for c in draft.candidates],
        identification_id=identification_id, case_ref=record.case_ref, status=draft.status,
    )
    return replace(draft, audit_seq=event.seq)


def reference_photo(
    parts: GalleryParts, identification_id: str, subject_id: str, *, reviewer: str
) -> ReferencePhoto:
    """See :meth:`Gallery.reference_photo`."""
    reviewer = check_name(reviewer, "reviewer")
    close_undecidable_now(parts, [identification_id], actor=reviewer)
    with (
        audit_refusal(parts.audit, "reference.view", reviewer, None, [subject_id],
                      identification_id=identification_id),
        parts.store.snapshot(),
    ):
        record = _open_for_review(parts, identification_id, reviewer)
        if subject_id not in {c[0] for c in record.candidates}:
            raise ReviewNotAllowed(
                f"Subject {subject_id!r} is not a candidate of identification "
                f"{identification_id!r}: reference photos are shown only for its "
                "candidates. Open the candidates from the review page."
            )
        why = ineligible_candidates(parts, record.purpose, [subject_id]).get(subject_id)
        if why is not None:
            raise ReviewClosed(ineligible_message(identification_id, subject_id, why))
        photos = parts.store.photos_of(subject_id)
    photo = None
    if photos:
        data_key = parts.keyring.data_key(subject_id)
        if data_key is not None:
            first = photos[0]
            photo = crypto.open_sealed(
                data_key, first.ciphertext, f"photo:{first.photo_id}:{subject_id}"
            )
    event = parts.audit.append(
        "reference.view", actor=reviewer, purpose=record.purpose, subject_ids=[subject_id],
        identification_id=identification_id, case_ref=record.case_ref,
        photo_kept=photo is not None,
    )
    return ReferencePhoto(
        identification_id, subject_id, photo, None if photo else NO_REFERENCE_PHOTO, event.seq
    )


def probe_photo(parts: GalleryParts, identification_id: str, *, reviewer: str) -> ProbePhoto:
    """See :meth:`Gallery.probe_photo`."""
    reviewer = check_name(reviewer, "reviewer")
    close_undecidable_now(parts, [identification_id], actor=reviewer)
    with (
        audit_refusal(parts.audit, "pending-probe.view", reviewer, None, [],
                      identification_id=identification_id),
        parts.store.snapshot(),
    ):
        record = _open_for_review(parts, identification_id, reviewer)
    kept = open_probe(parts, identification_id)
    event = parts.audit.append(
        "pending-probe.view", actor=reviewer, purpose=record.purpose,
        identification_id=identification_id, case_ref=record.case_ref,
        probe_kept=kept is not None,
    )
    if kept is None:
        return ProbePhoto(identification_id, None, None, NO_PROBE_PHOTO, event.seq)
    return ProbePhoto(identification_id, kept.photo, kept.box, None, event.seq)
