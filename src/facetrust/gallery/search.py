"""Searching the gallery: 1:N identification, human review of candidates, 1:1 verification.

Every search states a purpose, runs only over subjects whose active consent
covers it, and is audited; the probe is never stored.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import crypto
from ..errors import (
    ConsentExpired,
    InvalidParameter,
    ModelMismatch,
    UnknownSubject,
)
from ..matching import OperatingPoint
from ..pipeline import FacePolicy
from ..score_normalization import ScoreNormalizer
from ..store.base import IdentificationRecord, ReviewRecord
from .consent import require_consent
from .core import TEMPLATE_SECRET
from .index import SearchHit
from .types import (
    Candidate,
    Identification,
    ReviewStatus,
    SubjectVerification,
)

if TYPE_CHECKING:
    from .core import FaceInput, Gallery


def protected_normalizer(
    point: OperatingPoint, secret: bytes, dim: int
) -> ScoreNormalizer | None:
    """The point's score normalizer for templates protected with ``secret``, or None."""
    normalizer = point.score_normalizer()
    if normalizer is None:
        return None
    return normalizer.rotated(crypto.rotation_matrix(secret, dim))


def identify(
    gallery: Gallery,
    probe: FaceInput,
    *,
    purpose: str | None,
    actor: str,
    k: int = 5,
    case_ref: str | None = None,
    face_policy: FacePolicy = "single",
) -> Identification:
    """See :meth:`Gallery.identify`."""
    started = gallery._stamp()
    purpose = gallery._check_purpose(purpose)
    actor = gallery._check_name(actor, "actor")
    if not isinstance(k, int) or k < 1:
        raise InvalidParameter(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
    face = gallery._probe(probe, face_policy)
    model_id = face.embedding.model_id
    point = gallery._operating_point(model_id)
    secret = gallery._secret(TEMPLATE_SECRET)
    vector = crypto.protect(face.embedding.vector, secret)
    if gallery.config.server_side_search:
        if point.normalizer is not None:
            raise InvalidParameter(
                f"The operating point {point.name!r} normalizes scores, which the database "
                "search (server_side_search) cannot do yet. Use a plain operating point such "
                "as 'fmr-1e-3' for this gallery, or turn server-side search off."
            )
        hits, searched, generation = search_in_database(
            gallery, vector, model_id, purpose, k, point.threshold
        )
    else:
        index = gallery._index(model_id)
        generation = index.generation
        hits, searched = index.search(
            vector, purpose=purpose, now=gallery._now(), k=k, threshold=point.threshold,
            normalizer=protected_normalizer(point, secret, vector.shape[0]),
        )
    candidates = tuple(Candidate(h.subject_id, h.distance, r) for r, h in enumerate(hits, 1))
    ended = gallery._stamp()
    record = IdentificationRecord(
        identification_id=uuid.uuid4().hex,
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
    )
    with gallery.store.transaction():
        gallery.store.insert_identification(record)
        event = gallery.audit.append(
            "identify",
            actor=actor,
            purpose=purpose,
            subject_ids=[c.subject_id for c in candidates],
            identification_id=record.identification_id,
            case_ref=case_ref,
            probe_sha256=face.sha256,
            period_of_use={"started_at": started, "ended_at": ended},
            reference_gallery={
                "gallery_id": gallery.gallery_id,
                "generation": generation,
                "model_id": model_id,
                "subjects_searched": searched,
            },
            operating_point=point.name,
            threshold=point.threshold,
            k=k,
            candidate_count=len(candidates),
            candidates=[c.to_dict() for c in candidates],
            requires_human_review=True,
            review_quorum=gallery.config.review_quorum,
            verified_by=[],
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
        subjects_searched=searched,
        probe_sha256=face.sha256,
        started_at=started,
        ended_at=ended,
        audit_seq=event.seq,
    )


def search_in_database(
    gallery: Gallery,
    vector: npt.NDArray[np.float32],
    model_id: str,
    purpose: str | None,
    k: int,
    threshold: float,
    *,
    exclude: str | None = None,
) -> tuple[list[SearchHit], int, int]:
    """Identification by the store's pgvector HNSW index (``server_side_search``).

    The same eligibility rules as the in-memory index (active consent for the
    purpose, or any purpose if None, within retention), decided in SQL;
    approximate nearest neighbours. ``exclude`` leaves one subject out.
    Returns the hits within ``threshold``, the subjects searched and the
    generation searched.
    """
    store = gallery._vector_store()
    now = gallery._now()
    cutoff = now - timedelta(days=gallery.config.retention_days)
    with store.snapshot():
        generation = store.generation()
        found, searched = store.search_vectors(
            vector, model_id=model_id, purpose=purpose, now=now.isoformat(),
            retention_cutoff=cutoff.isoformat(), k=k, exclude=exclude,
            count_searched=exclude is None,  # a duplicate search reports no count
        )
    hits = [SearchHit(s, d) for s, d in found if d <= threshold]
    return hits, searched, generation


def review(
    gallery: Gallery,
    identification_id: str,
    subject_id: str,
    *,
    reviewer: str,
    decision: str = "confirm",
    note: str | None = None,
) -> ReviewStatus:
    """See :meth:`Gallery.review`."""
    reviewer = gallery._check_name(reviewer, "reviewer")
    if decision not in ("confirm", "reject"):
        raise InvalidParameter(
            f"The 'decision' must be 'confirm' or 'reject'. Got {decision!r} instead."
        )
    stamp = gallery._stamp()
    with gallery.store.transaction():
        record = gallery.store.get_identification(identification_id)
        if record is None:
            raise InvalidParameter(
                f"No identification {identification_id!r} in this gallery. Use the "
                "identification_id an `identify` returned."
            )
        if subject_id not in {c[0] for c in record.candidates}:
            raise InvalidParameter(
                f"Subject {subject_id!r} is not a candidate of identification "
                f"{identification_id!r}. Candidates: "
                + (", ".join(c[0] for c in record.candidates) or "none")
                + "."
            )
        gallery._subject_record(subject_id)
        # consent may have ended since the search: then nothing may be confirmed
        require_consent(
            gallery.store.consents_of(subject_id), record.purpose, gallery._now(), subject_id
        )
        gallery.store.insert_review(
            ReviewRecord(identification_id, subject_id, reviewer, decision, stamp, note)
        )
        reviews = [
            r for r in gallery.store.reviews_of(identification_id) if r.subject_id == subject_id
        ]
        confirmed = tuple(r.reviewer for r in reviews if r.decision == "confirm")
        rejected = tuple(r.reviewer for r in reviews if r.decision == "reject")
        if rejected:
            status = "rejected"
        elif len(confirmed) >= gallery.config.review_quorum:
            status = "confirmed"
            gallery.store.touch_subject(subject_id, stamp)
        else:
            status = "pending"
        event = gallery.audit.append(
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
            required=gallery.config.review_quorum,
            status=status,
        )
    return ReviewStatus(
        identification_id,
        subject_id,
        confirmed,
        rejected,
        gallery.config.review_quorum,
        status,
        event.seq,
    )


def verify_subject(
    gallery: Gallery,
    probe: FaceInput,
    subject_id: str,
    *,
    purpose: str | None,
    actor: str,
    face_policy: FacePolicy = "single",
) -> SubjectVerification:
    """See :meth:`Gallery.verify_subject`."""
    purpose = gallery._check_purpose(purpose)
    actor = gallery._check_name(actor, "actor")
    now = gallery._now()
    with gallery.store.snapshot():
        subject = gallery._subject_record(subject_id)
        require_consent(gallery.store.consents_of(subject_id), purpose, now, subject_id)
        if gallery._retention_until(subject) <= now:
            raise ConsentExpired(
                f"Subject {subject_id!r} is past the retention period "
                f"({gallery.config.retention_days} days after the last interaction, "
                f"{subject.last_interaction_at}); their data awaits the retention sweep."
            )
        templates = gallery.store.templates_of(subject_id)
    face = gallery._probe(probe, face_policy)
    model_id = face.embedding.model_id
    mine = [t for t in templates if t.model_id == model_id]
    if not mine:
        raise ModelMismatch(
            f"Subject {subject_id!r} has no template of model {model_id!r} (has: "
            + (", ".join(sorted({t.model_id for t in templates})) or "none")
            + "). Re-enrol the subject with this model."
        )
    data_key = gallery._data_key(subject_id)
    if data_key is None:
        raise UnknownSubject(f"Subject {subject_id!r} was erased (its data key is destroyed).")
    point = gallery._operating_point(model_id)
    secret = gallery._secret(TEMPLATE_SECRET)
    vector = crypto.protect(face.embedding.vector, secret)
    stored = np.stack([gallery._decrypt(t, data_key) for t in mine]).astype(np.float64)
    distances = np.linalg.norm(stored - vector.astype(np.float64), axis=1)
    normalizer = protected_normalizer(point, secret, vector.shape[0])
    if normalizer is not None:
        distances = normalizer.normalize(distances, vector, stored)
    distance = float(np.min(distances))
    match = distance <= point.threshold
    with gallery.store.transaction():
        gallery.store.touch_subject(subject_id, gallery._stamp())
        event = gallery.audit.append(
            "verify",
            actor=actor,
            purpose=purpose,
            subject_ids=[subject_id],
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
    )
