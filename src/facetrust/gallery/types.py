"""What the gallery's methods return: frozen value types, each with ``to_dict()``.

Scores are Euclidean **distances** between templates: lower is more similar,
and a candidate is returned only when ``distance <= threshold``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Subject:
    """An enrolled (or enrollable) person, by opaque id.

    ``retention_until`` is when the subject's data must be gone at the latest
    (last interaction plus the retention period), ISO 8601 UTC.
    """

    subject_id: str
    display_name: str | None
    created_at: str
    last_interaction_at: str
    retention_until: str
    template_count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SubjectPage:
    """One page of subjects, by increasing id (keyset paging).

    ``next_after`` is the id to pass as ``after`` for the next page; None on
    the last page.
    """

    subjects: tuple[Subject, ...]
    next_after: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": [s.to_dict() for s in self.subjects], "next_after": self.next_after}


@dataclass(frozen=True)
class Consent:
    """One consent record; ``status`` is ``"active"``, ``"expired"`` or ``"withdrawn"``.

    ``evidence_ref`` and ``evidence_sha256`` point to the signed form (or other
    proof) kept outside the gallery; ``notice_version`` is the version of the
    privacy notice / policy shown to the person. No biometric data.
    """

    consent_id: str
    subject_id: str
    purposes: tuple[str, ...]
    granted_at: str
    expires_at: str
    evidence_ref: str
    evidence_sha256: str
    notice_version: str
    status: str
    withdrawn_at: str | None = None
    withdrawal_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["purposes"] = list(self.purposes)
        return record


@dataclass(frozen=True)
class SubjectOverview:
    """What the gallery holds about one subject, for the person who manages it.

    Counts only: the templates and photos themselves are never part of it.

    Attributes
    ----------
    subject : Subject
        Id, display name, retention date and the number of templates.
    consents : tuple of Consent
        The consent history, oldest first (purposes, granted, expiry, withdrawal).
    photos_kept : int
        Source photos kept (encrypted) with the templates; 0 when none are kept.
    audit_seq : int
        The audit event that recorded this view.
    """

    subject: Subject
    consents: tuple[Consent, ...]
    photos_kept: int
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject.to_dict(),
                "consents": [c.to_dict() for c in self.consents],
                "photos_kept": self.photos_kept, "audit_seq": self.audit_seq}


@dataclass(frozen=True)
class DuplicateMatch:
    """Another subject whose template lies within the threshold of a new face."""

    subject_id: str
    distance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EnrolmentResult:
    """What an enrolment stored.

    ``duplicates`` lists other subjects the new faces matched (policy "warn");
    with policy "refuse" such an enrolment raises DuplicateEnrolment instead.
    """

    subject_id: str
    template_ids: tuple[str, ...]
    model_id: str
    photos_stored: int
    duplicates: tuple[DuplicateMatch, ...]
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["template_ids"] = list(self.template_ids)
        record["duplicates"] = [d.to_dict() for d in self.duplicates]
        return record


@dataclass(frozen=True)
class Candidate:
    """One candidate of a 1:N search: a subject, its best distance and its rank (1 = best)."""

    subject_id: str
    distance: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "distance": self.distance, "rank": self.rank}


@dataclass(frozen=True)
class Identification:
    """The outcome of a 1:N search: candidates awaiting human review.

    No candidate is an identification until ``review_quorum`` named reviewers
    confirm it (:meth:`Gallery.review`). The probe is never stored; only its
    SHA-256 is kept, in the audit log.

    Attributes
    ----------
    identification_id : str
    purpose, actor : str
    case_ref : str or None
    candidates : tuple of Candidate
        Ranked by increasing distance, at most ``k``, each ``distance <= threshold``.
    model_id, operating_point : str
    threshold : float
    subjects_searched : int
        Subjects whose active consent covered the purpose, with templates of this model.
    probe_sha256 : str
    started_at, ended_at : str
        The period of use, ISO 8601 UTC.
    requires_human_review : bool
        Always true: a candidate list is not an identification.
    audit_seq : int
    """

    identification_id: str
    purpose: str
    actor: str
    case_ref: str | None
    candidates: tuple[Candidate, ...]
    model_id: str
    operating_point: str
    threshold: float
    subjects_searched: int
    probe_sha256: str
    started_at: str
    ended_at: str
    audit_seq: int
    requires_human_review: bool = True

    def to_dict(self) -> dict[str, Any]:
        # shallow: asdict would deep-copy the candidates only to replace them (every 1:N answer)
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["candidates"] = [c.to_dict() for c in self.candidates]
        return record


@dataclass(frozen=True)
class ReviewStatus:
    """Where the human review of one candidate stands.

    ``status`` is ``"pending"`` until ``len(confirmed_by) >= required`` (then
    ``"confirmed"``), or ``"rejected"`` as soon as one reviewer rejects.
    """

    identification_id: str
    subject_id: str
    confirmed_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    required: int
    status: str
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["confirmed_by"] = list(self.confirmed_by)
        record["rejected_by"] = list(self.rejected_by)
        return record


@dataclass(frozen=True)
class SubjectVerification:
    """The outcome of a 1:1 check of a probe against one enrolled subject.

    ``match`` is ``distance <= threshold``; ``distance`` is the smallest over
    the subject's templates (lower is more similar).
    """

    subject_id: str
    purpose: str
    match: bool
    distance: float
    threshold: float
    operating_point: str
    model_id: str
    probe_sha256: str
    audit_seq: int
    case_ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure removed. ``key_destroyed`` means crypto-shredded;
    ``probes_deleted`` counts the probe photos, kept for review, of searches in which
    the subject was a candidate (each may be a photo of the subject)."""

    subject_id: str
    reason: str
    rows_deleted: int
    key_destroyed: bool
    subject_forgotten: bool
    audit_seq: int
    probes_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WithdrawalResult:
    """Consents withdrawn, and the erasure that followed when no active consent remained."""

    subject_id: str
    withdrawn: tuple[str, ...]
    erasure: ErasureResult | None
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "withdrawn": list(self.withdrawn),
            "erasure": None if self.erasure is None else self.erasure.to_dict(),
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class SweepResult:
    """What a retention sweep purged: subjects past retention or without active consent,
    ``probes_deleted`` probes of identifications kept past their review time limit, and
    ``identifications_closed`` identifications nobody could decide any more (every
    candidate left undecided no longer eligible: their probes went at once), and
    ``data_keys_destroyed`` keys of subjects never stored (an interrupted enrolment)."""

    erased: tuple[str, ...]
    audit_seq: int
    probes_deleted: int = 0
    identifications_closed: int = 0
    data_keys_destroyed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"erased": list(self.erased), "audit_seq": self.audit_seq,
                "probes_deleted": self.probes_deleted,
                "identifications_closed": self.identifications_closed,
                "data_keys_destroyed": self.data_keys_destroyed}


@dataclass(frozen=True)
class KeyRotationResult:
    """A master key rotation (``keys_rewrapped`` data keys) or template re-keying."""

    kind: str
    rewrapped: int
    new_key_id: str
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
