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

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
    describe = _ENTRY_POINT_FIELDS.get()
    added = dict(describe(told)) if describe is not None else {}
    # the entry point's purpose and subjects complete the gallery's, never replace them
    purpose = purpose or added.pop("purpose", None)
    added.pop("purpose", None)
    named = [s for s in added.pop("subject_ids", ()) if s not in subjects]
    event: dict[str, Any] = {
        key: bounded(value, MAX_RECORDED_CHARS) for key, value in {
            "actor": actor or None, "purpose": purpose or None,
            "subject_ids": [*subjects, *named], "error": type(error).__name__,
            **added, **fields,
        }.items()
    }
    event["message"] = bounded(str(error), MAX_RECORDED_MESSAGE)
    # kept with the error, for a transaction of the caller's that rolls back (see below)
    told.__dict__[_PENDING] = (f"{kind}.refused", event)
    return audit.append(f"{kind}.refused", **event).seq


_PENDING = "facetrust_refusal_event"
_WRITTEN_AGAIN = "facetrust_refusal_written_again"

#: What the entry point of the current call adds to its refusal events (see
#: :func:`entry_point_fields`): a function of the refusal raised.
_ENTRY_POINT_FIELDS: ContextVar[Callable[[BaseException], Mapping[str, Any]] | None] = (
    ContextVar("facetrust_refusal_fields", default=None)
)


@contextmanager
def entry_point_fields(describe: Callable[[BaseException], Mapping[str, Any]]) -> Iterator[None]:
    """Add ``describe(error)``'s fields to each refusal event recorded inside the block.

    How an entry point that answers a refusal its own way (the REST service:
    its route, problem type and status) records what it knows in the
    gallery's one ``<kind>.refused`` event instead of writing a second one
    (see :func:`is_audited_refusal`). ``purpose`` and ``subject_ids`` among
    them complete what the gallery's event names; the gallery's own fields
    win over any other of the same name. ``error`` is the refusal as raised
    (a :class:`SubjectNotVerifiable`, not its cause).
    """
    token = _ENTRY_POINT_FIELDS.set(describe)
    try:
        yield
    finally:
        _ENTRY_POINT_FIELDS.reset(token)


def is_audited_refusal(error: BaseException) -> bool:
    """Whether the gallery recorded ``error`` as a ``<kind>.refused`` event.

    An entry point that audits the refusals it answers writes its own event
    only when this is False. The event of a refusal raised inside a caller's
    transaction is kept only if :func:`audit_refusal_again` is called after
    the rollback (``Gallery.batch(audit_refusals=True)`` does).
    """
    return _PENDING in error.__dict__ or _WRITTEN_AGAIN in error.__dict__

#: Longest text a refusal event copies from the request (an id, a purpose, a case
#: reference), and longest message: longer ones are cut to their start and their
#: length, so refused requests cannot copy megabytes into the hash-chained log.
MAX_RECORDED_CHARS = 200
MAX_RECORDED_MESSAGE = 1000


def bounded(value: Any, limit: int = MAX_RECORDED_CHARS) -> Any:
    """``value`` with each string in it (or in its list) cut to ``limit`` characters.

    For every audit event that copies text from a request (the REST service's
    ``service.refused`` too), so a request cannot copy megabytes into the log.
    """
    if isinstance(value, list | tuple):
        return [bounded(item, limit) for item in value]
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
    error.__dict__[_WRITTEN_AGAIN] = True
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
