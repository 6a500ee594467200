"""Subjects and their consents: registering people, recording consent, the consent checks.

A subject is an opaque id (and an optional display name) with no biometric
data until enrolment. Consent records name their purposes, expiry and
evidence; :func:`require_active_consent` is the one check every enrolment,
search and verification passes through.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from ..errors import ConsentExpired, InvalidParameter, UnknownSubject
from ..store.base import ConsentRecord, SubjectRecord
from ..text import canonical, shown
from ..times import to_utc
from .checks import check_display_name, check_name, check_purpose, check_subject_id
from .consent import consent_status, require_consent
from .parts import GalleryParts
from .types import Consent, Subject, SubjectOverview, SubjectPage


def expiry_after_days(now: datetime, days: int) -> datetime:
    """The expiry of a consent that lasts ``days`` days from ``now``.

    Raises
    ------
    InvalidParameter
        ``days`` is not a whole number >= 1, or the expiry would fall after the
        year 9999.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidParameter(
            f"The 'days' of a consent must be a whole number of days, at least 1. Got {days!r}."
        )
    try:
        return now + timedelta(days=days)
    except OverflowError:
        raise InvalidParameter(
            f"A consent lasting {days} days from {now.date().isoformat()} would expire after "
            "the year 9999. Give a shorter time, or an expiry date (expires_at, --expires)."
        ) from None


def subject_record(parts: GalleryParts, subject_id: str) -> SubjectRecord:
    """The stored record of a subject not erased (call inside a store snapshot or transaction).

    Raises
    ------
    UnknownSubject
    """
    record = parts.store.get_subject(subject_id)
    if record is None or record.erased_at is not None:
        raise UnknownSubject(
            f"No subject '{shown(subject_id)}' in this gallery (never added, or erased). "
            "Check the id: ids are case-sensitive."
        )
    return record


def require_active_consent(
    parts: GalleryParts, subject_id: str, purpose: str | None, *, within_retention: bool = False
) -> SubjectRecord:
    """The subject's record, if it exists and an active consent covers ``purpose``.

    ``purpose`` None accepts a consent to any purpose (enrolment). With
    ``within_retention``, a subject past its retention period is refused too.
    Call inside a store snapshot or transaction.

    Raises
    ------
    UnknownSubject
    ConsentRequired, ConsentWithdrawn, ConsentExpired, PurposeNotConsented
    """
    record = subject_record(parts, subject_id)
    now = parts.now()
    require_consent(parts.store.consents_of(subject_id), purpose, now, subject_id)
    if within_retention and parts.retention_until(record) <= now:
        raise ConsentExpired(
            f"Subject {subject_id!r} is past the retention period "
            f"({parts.config.retention_days} days after the last interaction, "
            f"{record.last_interaction_at}); their data awaits the retention sweep."
        )
    return record


def to_subject(parts: GalleryParts, record: SubjectRecord) -> Subject:
    """The public view of a stored subject (call inside a store snapshot)."""
    return Subject(
        subject_id=record.subject_id,
        display_name=record.display_name,
        created_at=record.created_at,
        last_interaction_at=record.last_interaction_at,
        retention_until=parts.retention_until(record).isoformat(),
        template_count=len(parts.store.templates_of(record.subject_id)),
    )


def to_consent(record: ConsentRecord, now: datetime) -> Consent:
    """The public view of a stored consent, with its status at ``now``."""
    return Consent(
        consent_id=record.consent_id,
        subject_id=record.subject_id,
        purposes=record.purposes,
        granted_at=record.granted_at,
        expires_at=record.expires_at,
        evidence_ref=record.evidence_ref,
        evidence_sha256=record.evidence_sha256,
        notice_version=record.notice_version,
        status=consent_status(record, now),
        withdrawn_at=record.withdrawn_at,
        withdrawal_reason=record.withdrawal_reason,
    )


def add_subject(
    parts: GalleryParts, subject_id: str | None, *, display_name: str | None, actor: str
) -> Subject:
    """See :meth:`Gallery.add_subject`."""
    actor = check_name(actor, "actor")
    subject_id = check_subject_id(uuid.uuid4().hex if subject_id is None else subject_id)
    display_name = check_display_name(display_name)
    stamp = parts.stamp()
    record = SubjectRecord(subject_id, display_name, stamp, stamp)
    with parts.store.transaction():
        parts.store.insert_subject(record)
        parts.store.bump_generation()
        parts.audit.append("subject.add", actor=actor, subject_ids=[subject_id])
        return to_subject(parts, record)


def grant_consent(
    parts: GalleryParts,
    subject_id: str,
    purposes: Sequence[str],
    *,
    expires_at: datetime,
    evidence_ref: str,
    evidence_sha256: str,
    notice_version: str,
    actor: str,
) -> Consent:
    """See :meth:`Gallery.grant_consent`."""
    actor = check_name(actor, "actor")
    if not purposes:
        raise InvalidParameter("A consent must name at least one purpose. Got none.")
    # recorded as the gallery spells them, whatever form they were typed in
    purposes = tuple(dict.fromkeys(check_purpose(p, parts.config.purposes) for p in purposes))
    now = parts.now()
    if not isinstance(expires_at, datetime):
        raise InvalidParameter(
            "The 'expires_at' of a consent must be a datetime with its time zone; read a "
            "typed text with facetrust.times.parse_time, as every entry point does. "
            f"Got a value of type {type(expires_at).__name__}."
        )
    if expires_at.tzinfo is None or expires_at <= now:
        raise InvalidParameter(
            "The 'expires_at' of a consent must be a time in the future, with its time zone "
            f"(e.g. 2027-01-31T00:00:00+00:00). Got {expires_at.isoformat()}."
        )
    expires_utc = to_utc(expires_at, "expires_at")
    digest = evidence_sha256.strip().lower()  # as pasted: outer spaces, any case
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidParameter(
            "The 'evidence_sha256' must be the 64 hex digits of the evidence file's SHA-256. "
            f"Got {evidence_sha256!r} instead."
        )
    record = ConsentRecord(
        consent_id=uuid.uuid4().hex,
        subject_id=subject_id,
        purposes=purposes,
        granted_at=now.isoformat(),
        expires_at=expires_utc.isoformat(),
        evidence_ref=check_name(evidence_ref, "evidence_ref"),
        evidence_sha256=digest,
        notice_version=check_name(notice_version, "notice_version"),
    )
    with parts.store.transaction():
        subject_record(parts, subject_id)
        parts.store.insert_consent(record)
        parts.store.touch_subject(subject_id, now.isoformat())
        parts.store.bump_generation()
        parts.audit.append(
            "consent.grant",
            actor=actor,
            subject_ids=[subject_id],
            consent_id=record.consent_id,
            purposes=list(purposes),
            expires_at=record.expires_at,
            evidence_ref=record.evidence_ref,
            evidence_sha256=digest,
            notice_version=record.notice_version,
        )
    return to_consent(record, now)


#: Most subjects one page may hold.
MAX_PAGE = 500


def find_subjects(
    parts: GalleryParts, query: str | None, *, after: str | None, limit: int
) -> SubjectPage:
    """See :meth:`Gallery.find_subjects`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidParameter(
            f"The 'limit' parameter of find_subjects must be an int in [1, {MAX_PAGE}]. "
            f"Got {limit!r} instead."
        )
    contains = canonical(query or "").strip() or None  # display names are stored in NFC
    if contains is not None and len(contains) > 200:
        raise InvalidParameter(
            "A subject search matches ids and display names of at most 200 characters; "
            f"got {len(contains)} characters. Type part of the id or name."
        )
    with parts.store.snapshot():
        records = parts.store.page_subjects(after=after, limit=limit + 1, contains=contains)
        page = [to_subject(parts, r) for r in records[:limit]]
    more = len(records) > limit
    return SubjectPage(tuple(page), page[-1].subject_id if more else None)


def view_subject(parts: GalleryParts, subject_id: str, *, actor: str) -> SubjectOverview:
    """See :meth:`Gallery.view_subject`."""
    actor = check_name(actor, "actor")
    now = parts.now()
    with parts.store.transaction():
        record = subject_record(parts, subject_id)
        subject = to_subject(parts, record)
        consents = tuple(to_consent(c, now) for c in parts.store.consents_of(subject_id))
        photos = len(parts.store.photos_of(subject_id))
        event = parts.audit.append("subject.view", actor=actor, subject_ids=[subject_id])
    return SubjectOverview(subject, consents, photos, event.seq)
