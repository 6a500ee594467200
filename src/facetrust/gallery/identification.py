"""Searching the gallery: 1:N identification, human review of candidates, 1:1 verification.

Every search states a purpose, runs only over subjects whose active consent
covers it, and is audited. The probe photo is kept, sealed, only while the
identification awaits review (:mod:`.pending`), and deleted once it is decided.
Refused searches are audited too (:mod:`.refusals`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import (
    ConsentError,
    EventOnlySubject,
    InvalidParameter,
    ModelMismatch,
    ReviewClosed,
    ReviewNotAllowed,
    SubjectNotVerifiable,
    UnknownIdentification,
    UnknownSubject,
)
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy
from ..store.base import IdentificationRecord, PendingProbeRecord, ReviewRecord
from .checks import (
    check_case_ref,
    check_k,
    check_name,
    check_purpose,
    check_text,
    is_same_name,
)
from .closing import (
    close_undecidable,
    close_undecidable_now,
    closed_message,
    ineligible_candidates,
    ineligible_message,
    shred_closed_probes,
    undecidable,
)
from .parts import GalleryParts
from .pending import discard_probe, forget_unstored_probe, seal_probe
from .probes import FaceInput
from .review_states import candidate_reviews, identification_state, quorum_of, review_state
from .search import event_only_owner, event_only_subjects, search_probe
from .subjects import require_active_consent
from .types import Candidate, Identification, ReviewStatus, SubjectVerification


@contextmanager
def _forgetting_probe_on_failure(
    parts: GalleryParts, identification_id: str, kept: PendingProbeRecord | None
) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if kept is not None:
            forget_unstored_probe(parts, identification_id)
        raise


def identify(
    parts: GalleryParts,
    probe: FaceInput,
    *,
    purpose: str | None,
    actor: str,
    k: int = 5,
    case_ref: str | None,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> Identification:
    """See :meth:`Gallery.identify`."""
    started = parts.stamp()
    purpose = check_purpose(purpose, parts.config.purposes)
    actor = check_name(actor, "actor")
    k = check_k(k)
    case_ref = check_case_ref(case_ref)
    face = parts.read_probe(probe, face_policy)
    model_id = face.model_id
    point = parts.operating_point(model_id)
    found = search_probe(parts, face.embedding.vector, model_id, purpose=purpose, point=point, k=k)
    candidates = tuple(
        Candidate(h.subject_id, h.distance, r) for r, h in enumerate(found.hits, 1)
    )
    ended = parts.stamp()
    identification_id = uuid.uuid4().hex
    kept = None
    if candidates and face.photo is not None and face.face is not None:
        kept = seal_probe(parts, identification_id, face.photo, face.face.box, parts.now())
    record = IdentificationRecord(
        identification_id=identification_id,
        purpose=purpose,
        actor=actor,
        case_ref=case_ref,
        probe_sha256=face.sha256,
        model_id=model_id,
        operating_point=point.name,
        threshold=point.threshold,
        started_at=started,
        ended_at=ended,
        candidates=tuple((c.subject_id, c.distance, c.rank) for c in candidates),
        review_quorum=parts.config.review_quorum,
    )
    with _forgetting_probe_on_failure(parts, identification_id, kept), parts.store.transaction():
        parts.store.insert_identification(record)
        if kept is not None:
            parts.store.insert_pending_probe(kept)
        if not candidates:  # nothing to review
            parts.store.mark_identification_decided(record.identification_id, ended)
        event = parts.audit.append(
            "identify",
            actor=actor,
            purpose=purpose,
            subject_ids=[c.subject_id for c in candidates],
            identification_id=record.identification_id,
            case_ref=case_ref,
            probe_sha256=face.sha256,
            period_of_use={"started_at": started, "ended_at": ended},
            reference_gallery={
                "gallery_id": parts.gallery_id,
                "generation": found.generation,
                "model_id": model_id,
                "subjects_searched": found.searched,
            },
            operating_point=point.name,
            threshold=point.threshold,
            k=k,
            candidate_count=len(candidates),
            candidates=[c.to_dict() for c in candidates],
            requires_human_review=True,
            review_quorum=record.review_quorum,
            verified_by=[],
            probe_kept_until=None if kept is None else kept.delete_after,
        )
    return Identification(
        identification_id=record.identification_id,
        purpose=purpose,
        actor=actor,
        case_ref=case_ref,
        candidates=candidates,
        model_id=model_id,
        operating_point=point.name,
        threshold=point.threshold,
        subjects_searched=found.searched,
        probe_sha256=face.sha256,
        started_at=started,
        ended_at=ended,
        audit_seq=event.seq,
    )


def review(
    parts: GalleryParts,
    identification_id: str,
    subject_id: str,
    *,
    reviewer: str,
    decision: str = "confirm",
    note: str | None = None,
) -> ReviewStatus:
    """See :meth:`Gallery.review`."""
    reviewer = check_name(reviewer, "reviewer")
    note = check_text(note, "note")
    if decision not in ("confirm", "reject"):
        raise InvalidParameter(
            f"The 'decision' must be 'confirm' or 'reject'. Got {decision!r} instead."
        )
    # a case nobody can decide any more is closed first (it commits even though
    # this review is then refused)
    close_undecidable_now(parts, [identification_id], actor=reviewer)
    stamp = parts.stamp()
    closed: list[str] = []
    with parts.store.transaction():
        record = parts.store.get_identification(identification_id)
        if record is None:
            raise UnknownIdentification(
                f"No identification {identification_id!r} in this gallery. Use the "
                "identification_id an identify returned."
            )
        quorum = quorum_of(record, parts.config.review_quorum)  # the search's, not today's
        if subject_id not in {c[0] for c in record.candidates}:
            raise InvalidParameter(
                f"Subject {subject_id!r} is not a candidate of identification "
                f"{identification_id!r}. Candidates: "
                + (", ".join(c[0] for c in record.candidates) or "none")
                + "."
            )
        if is_same_name(reviewer, record.actor) and not parts.config.searcher_may_review:
            raise ReviewNotAllowed(
                f"{reviewer} ran this identification, and this gallery's policy is that "
                "candidates are reviewed by other people (searcher_may_review is off). "
                "Ask another operator to review it."
            )
        if parts.store.identification_closure(identification_id) is not None:
            raise ReviewClosed(closed_message(identification_id))
        every = parts.store.reviews_of(identification_id)
        decided = [s for s, (state, _, _) in candidate_reviews(record, every, quorum).items()
                   if state == "confirmed"]
        if decided:
            raise ReviewClosed(
                f"Identification {identification_id!r} is already confirmed as {decided[0]!r}; "
                "its other candidates are not reviewed any more and its probe is deleted. "
                "Run a new identification if the decision must be revisited."
            )
        earlier = [r for r in every if r.subject_id == subject_id]
        state = review_state(
            sum(r.decision == "confirm" for r in earlier),
            sum(r.decision == "reject" for r in earlier),
            quorum,
        )
        if state != "pending":
            raise ReviewClosed(
                f"Candidate {subject_id!r} of identification {identification_id!r} is already "
                f"{state}; review decisions are final. Run a new identification if the "
                "decision must be revisited."
            )
        if any(is_same_name(r.reviewer, reviewer) for r in earlier):
            raise ReviewClosed(
                f"{reviewer} has already reviewed candidate {subject_id!r} of this "
                f"identification; {quorum} different reviewers must confirm it."
            )
        # consent or retention may have ended since the search: then nothing may be
        # decided (a confirmation counts as an interaction, and would push back the
        # retention limit of a subject the sweep is due to erase)
        why = ineligible_candidates(parts, record.purpose, [subject_id]).get(subject_id)
        if why is not None:
            raise ReviewClosed(ineligible_message(identification_id, subject_id, why))
        parts.store.insert_review(
            ReviewRecord(identification_id, subject_id, reviewer, decision, stamp, note)
        )
        reviews = earlier + [
            ReviewRecord(identification_id, subject_id, reviewer, decision, stamp, note)
        ]
        confirmed = tuple(r.reviewer for r in reviews if r.decision == "confirm")
        rejected = tuple(r.reviewer for r in reviews if r.decision == "reject")
        status = review_state(len(confirmed), len(rejected), quorum)
        if status == "confirmed":
            parts.store.touch_subject(subject_id, stamp)
        states = candidate_reviews(record, parts.store.reviews_of(identification_id), quorum)
        overall = identification_state(s for s, _, _ in states.values())
        if overall != "pending":
            parts.store.mark_identification_decided(identification_id, stamp)
        elif undecidable(parts, record) is not None:
            overall = "closed"  # every candidate left undecided is ineligible
        event = parts.audit.append(
            "review",
            actor=reviewer,
            purpose=record.purpose,
            subject_ids=[subject_id],
            identification_id=identification_id,
            case_ref=record.case_ref,
            decision=decision,
            note=note,
            verified_by=list(confirmed),
            rejected_by=list(rejected),
            required=quorum,
            status=status,
            identification_status=overall,
        )
        if overall == "closed":
            closed = close_undecidable(parts, [identification_id], actor=reviewer)
    if closed:
        shred_closed_probes(parts, closed, actor=reviewer)
    elif overall != "pending":
        discard_probe(parts, identification_id, actor=reviewer,
                      reason=f"identification {overall}")
    return ReviewStatus(
        identification_id, subject_id, confirmed, rejected, quorum, status, event.seq
    )


def not_verifiable(subject_id: str, purpose: str) -> SubjectNotVerifiable:
    """The one refusal of a verification against a subject who cannot be verified for
    ``purpose``, whatever the reason (raise it ``from`` the reason)."""
    return SubjectNotVerifiable(
        f"No subject {subject_id!r} with an active consent covering {purpose!r} can be "
        "verified in this gallery. Check the subject id and the purpose; if both are "
        "right, the person is not enrolled for this purpose: use the manual path (an "
        "identity document), or ask an enroller to check their consent."
    )


def refuse_event_only(subject_id: str, event_id: str | None) -> None:
    """Refuse a verification of ``subject_id``, enrolled for the event ``event_id`` only
    (None: not event-only, nothing to refuse)."""
    if event_id is not None:
        raise EventOnlySubject(
            f"Subject {subject_id!r} was enrolled for the event {event_id!r} only, with a "
            "consent that covers that event alone, so only its gate matches them: they "
            "cannot be verified here. Check the person at the event's gate (or on its "
            "manual path with their documents), or enrol them as an ordinary subject "
            "with a consent of their own.",
            event_id=event_id,
        )


def verify_subject(
    parts: GalleryParts,
    probe: FaceInput,
    subject_id: str,
    *,
    purpose: str | None,
    actor: str,
    case_ref: str | None,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> SubjectVerification:
    """See :meth:`Gallery.verify_subject`."""
    purpose = check_purpose(purpose, parts.config.purposes)
    actor = check_name(actor, "actor")
    case_ref = check_case_ref(case_ref)
    with parts.store.snapshot():
        try:
            require_active_consent(parts, subject_id, purpose, within_retention=True)
        except (UnknownSubject, ConsentError) as error:
            raise not_verifiable(subject_id, purpose) from error
        if subject_id in event_only_subjects(parts, parts.store.generation()):
            refuse_event_only(subject_id, event_only_owner(parts.store, subject_id))
        templates = parts.store.templates_of(subject_id)
    face = parts.read_probe(probe, face_policy)
    model_id = face.model_id
    if not any(t.model_id == model_id for t in templates):
        raise ModelMismatch(
            f"Subject {subject_id!r} has no template of model {model_id!r} (has: "
            + (", ".join(sorted({t.model_id for t in templates})) or "none")
            + "). Re-enrol the subject with this model."
        )
    if parts.keyring.data_key(subject_id) is None:
        raise not_verifiable(subject_id, purpose) from UnknownSubject(
            f"Subject {subject_id!r} was erased (its data key is destroyed).")
    point = parts.operating_point(model_id)
    found = search_probe(
        parts, face.embedding.vector, model_id, purpose=purpose, point=point, k=1,
        threshold=math.inf, only=[subject_id],
    )
    if not found.hits:  # erased or withdrawn between the checks and the search
        raise not_verifiable(subject_id, purpose) from UnknownSubject(
            f"Subject {subject_id!r} cannot be searched any more (erased or consent ended)."
        )
    distance = found.hits[0].distance
    match = distance <= point.threshold
    with parts.store.transaction():
        parts.store.touch_subject(subject_id, parts.stamp())
        event = parts.audit.append(
            "verify",
            actor=actor,
            purpose=purpose,
            subject_ids=[subject_id],
            case_ref=case_ref,
            probe_sha256=face.sha256,
            match=match,
            distance=distance,
            threshold=point.threshold,
            operating_point=point.name,
            model_id=model_id,
        )
    return SubjectVerification(
        subject_id,
        purpose,
        match,
        distance,
        point.threshold,
        point.name,
        model_id,
        face.sha256,
        event.seq,
        case_ref,
    )
