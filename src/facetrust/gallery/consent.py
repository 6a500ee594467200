"""Consent and retention rules: which consent is active, the specific error when none is,
and when a subject leaves retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..errors import ConsentExpired, ConsentRequired, ConsentWithdrawn, PurposeNotConsented
from ..store.base import ConsentRecord, SubjectRecord


def consent_status(consent: ConsentRecord, now: datetime) -> str:
    """``"withdrawn"``, ``"expired"`` or ``"active"`` at time ``now``."""
    if consent.withdrawn_at is not None:
        return "withdrawn"
    if datetime.fromisoformat(consent.expires_at) <= now:
        return "expired"
    return "active"


def require_consent(
    consents: Sequence[ConsentRecord], purpose: str | None, now: datetime, subject_id: str
) -> ConsentRecord:
    """The active consent covering ``purpose`` (any purpose when None), else the specific error.

    Raises
    ------
    ConsentRequired
        The subject never gave consent.
    ConsentWithdrawn, ConsentExpired
        The newest consent was withdrawn, or has expired, and none is active.
    PurposeNotConsented
        Consent is active, but not for ``purpose``.
    """
    active = [c for c in consents if consent_status(c, now) == "active"]
    for consent in reversed(active):
        if purpose is None or purpose in consent.purposes:
            return consent
    if active:
        granted = sorted({p for c in active for p in c.purposes})
        raise PurposeNotConsented(
            f"Subject {subject_id!r} consented to {', '.join(granted)}, not to {purpose!r}. "
            "Search for a consented purpose, or record a new consent that covers it."
        )
    if not consents:
        raise ConsentRequired(
            f"Subject {subject_id!r} has no consent on record. Record one with "
            "`facetrust consent grant` before enrolling or searching."
        )
    newest = consents[-1]
    if consent_status(newest, now) == "withdrawn":
        raise ConsentWithdrawn(
            f"Subject {subject_id!r} withdrew consent on {newest.withdrawn_at}. Their biometric "
            "data was erased; a new consent and a new enrolment are needed."
        )
    raise ConsentExpired(
        f"Subject {subject_id!r}'s consent expired on {newest.expires_at}. Record a renewed "
        "consent to continue."
    )


def retention_until(subject: SubjectRecord, retention_days: int) -> datetime:
    """When ``subject`` leaves retention: ``retention_days`` after its last interaction."""
    return datetime.fromisoformat(subject.last_interaction_at) + timedelta(days=retention_days)
