"""Auditing the gallery's refusals of a request that touches biometric data or consent.

A search, a verification, an enrolment, a review, a reviewer's view, a view
of a subject's record, a consent granted or withdrawn or an erasure refused
because of what the caller asked (a bad parameter or purpose, no consent, an
unknown subject or identification, a reviewer who may not review it or a
decided one, an image that is not a photo or holds no usable face, a caller
whose credentials do not allow it) is audited as ``<kind>.refused``
with the error's type and message, then raised: whichever entry point made
the request (library, CLI, REST service, console), the attempt leaves a trace.
Failures of the system itself (the store, the keys, the models) are not
refusals and are not audited here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..audit import AuditLog
from ..errors import (
    AuthorizationError,
    ConsentError,
    EventError,
    FaceError,
    ImageError,
    InvalidParameter,
    PurposeRequired,
    ReviewClosed,
    ReviewNotAllowed,
    SubjectNotVerifiable,
    UnknownIdentification,
    UnknownSubject,
)

#: What the gallery refuses because of the request (see the module notes).
REFUSALS = (InvalidParameter, PurposeRequired, ConsentError, UnknownSubject,
            UnknownIdentification, ReviewNotAllowed, ReviewClosed, ImageError, FaceError,
            AuthorizationError, EventError)


def record_refusal(
    audit: AuditLog,
    kind: str,
    error: BaseException,
    *,
    actor: str | None,
    purpose: str | None,
    subjects: list[str],
    **fields: Any,
) -> int:
    """Append the ``<kind>.refused`` event of ``error`` (its type and message);
    returns its audit sequence number.

    The one writer of refusal events: :func:`audit_refusal`, the gate
    (:func:`~facetrust.gate.decisions.refuse_at_gate`) and the CLI's key
    checks all record theirs here. A :class:`SubjectNotVerifiable` is recorded
    by its cause (unknown subject, no consent, ...): the caller was told less
    than the auditor may know.
    """
    told = error
    if isinstance(error, SubjectNotVerifiable) and error.__cause__ is not None:
        error = error.__cause__
    event: dict[str, Any] = {
        key: _bounded(value, MAX_RECORDED_CHARS) for key, value in {
            "actor": actor or None, "purpose": purpose or None, "subject_ids": subjects,
            "error": type(error).__name__, **fields,
        }.items()
    }
    event["message"] = _bounded(str(error), MAX_RECORDED_MESSAGE)
    # kept with the error, for a transaction of the caller's that rolls back (see below)
    told.__dict__[_PENDING] = (f"{kind}.refused", event)
    return audit.append(f"{kind}.refused", **event).seq


_PENDING = "facetrust_refusal_event"

#: Longest text a refusal event copies from the request (an id, a purpose, a case
#: reference), and longest message: longer ones are cut to their start and their
#: length, so refused requests cannot copy megabytes into the hash-chained log.
MAX_RECORDED_CHARS = 200
MAX_RECORDED_MESSAGE = 1000


def _bounded(value: Any, limit: int) -> Any:
    """``value`` with each string in it (or in its list) cut to ``limit`` characters."""
    if isinstance(value, list | tuple):
        return [_bounded(item, limit) for item in value]
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 40]}... (cut: {len(value):,} characters)"
    return value


def audit_refusal_again(audit: AuditLog, error: BaseException) -> bool:
    """Append again the refusal event of ``error``, if it has one (else False).

    A refusal raised inside a caller's transaction (``Gallery.batch``) was
    audited inside it, so the transaction's rollback took the event with it;
    call this after the rollback to write it for good.
    """
    pending = error.__dict__.pop(_PENDING, None)
    if pending is None:
        return False
    kind, event = pending
    audit.append(kind, **event)
    return True


@contextmanager
def audit_refusal(
    audit: AuditLog,
    kind: str,
    actor: str | None,
    purpose: str | None,
    subjects: list[str],
    **fields: Any,
) -> Iterator[None]:
    """Audit a refusal raised inside the block as ``<kind>.refused``, then re-raise it."""
    try:
        yield
    except REFUSALS as error:
        record_refusal(audit, kind, error, actor=actor, purpose=purpose, subjects=subjects,
                       **fields)
        raise
