"""Event galleries: the life cycle of a time-boxed gallery for one flight, exam or entrance.

An event names one purpose and a validity window. Its gallery holds only
members: already-enrolled subjects whose consent covers the purpose, and
people enrolled just for the event (``event_only``) from a document photo with
consent captured at enrolment. A gate searches only the event's members, and
only while the event is open and within its window. Closing the event dissolves
its gallery and erases the event-only subjects for good (audited).

Opting out needs no face: it records a reference (a booking, a seat) and,
when the person is a member, removes them from the event's gallery at once.
Their passage is recorded by :func:`.decisions.record_manual_passage`, which
takes no image at all. What the gate decides for each traveller is in
:mod:`.decisions`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import EventError, InvalidParameter, UnknownSubject
from ..faces import Embedding
from ..gallery import Gallery, search
from ..gallery.checks import (
    MAX_EVENT_ID_LENGTH,
    check_identifier,
    check_name,
    check_subject_id,
)
from ..gallery.refusals import audit_refusal
from ..images import ImageSource
from ..matching import get_operating_point
from ..store.base import EventMemberRecord, EventRecord, OptOutRecord
from ..text import canonical
from ..times import to_utc

#: Longest window of an event gallery, in hours (7 days): it is for one event.
MAX_EVENT_HOURS = 7 * 24


@dataclass(frozen=True)
class Event:
    """A time-boxed event and the size of its gallery."""

    event_id: str
    purpose: str
    valid_from: str
    valid_to: str
    operating_point: str
    status: str
    members: int
    opt_outs: int
    closed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EventClosure:
    """What closing an event removed."""

    event_id: str
    members_removed: int
    subjects_erased: tuple[str, ...]
    probe_crops_deleted: int

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["subjects_erased"] = list(self.subjects_erased)
        return record


def event_record(gallery: Gallery, event_id: str) -> EventRecord:
    record = gallery.store.get_event(event_id)
    if record is None:
        raise EventError(
            f"No event {event_id!r} in this gallery. Open one with `facetrust event open`."
        )
    return record


def require_open_event(gallery: Gallery, event_id: str) -> EventRecord:
    record = event_record(gallery, event_id)
    if record.closed_at is not None:
        raise EventError(f"The event {event_id!r} was closed on {record.closed_at}.")
    return record


def require_event_in_window(gallery: Gallery, event_id: str) -> EventRecord:
    """The event's record if it is open and ``gallery.now()`` lies inside its window.

    Raises
    ------
    EventError
        The event is unknown, closed, not yet started or over.
    """
    record = require_open_event(gallery, event_id)
    now = gallery.now()
    if not (
        datetime.fromisoformat(record.valid_from)
        <= now
        <= datetime.fromisoformat(record.valid_to)
    ):
        raise EventError(
            f"The event {event_id!r} runs from {record.valid_from} to {record.valid_to}; "
            f"the gate cannot match at {now.isoformat()}."
        )
    return record


def _summary(gallery: Gallery, record: EventRecord) -> Event:
    now = gallery.now()
    if record.closed_at is not None:
        status = "closed"
    elif now < datetime.fromisoformat(record.valid_from):
        status = "scheduled"
    elif now > datetime.fromisoformat(record.valid_to):
        status = "ended"
    else:
        status = "open"
    return Event(
        record.event_id,
        record.purpose,
        record.valid_from,
        record.valid_to,
        record.operating_point or get_operating_point().name,
        status,
        len(gallery.store.event_members(record.event_id)),
        len(gallery.store.opt_outs(record.event_id)),
        record.closed_at,
    )


def event_end(valid_from: datetime, hours: float) -> datetime:
    """The end, in UTC, of an event that starts at ``valid_from`` and lasts ``hours`` hours.

    ``hours`` are real hours: the start is taken to UTC first, so a window across a
    daylight-saving change in a named time zone (``ZoneInfo("Europe/Paris")``) still
    lasts exactly ``hours`` hours.

    Raises
    ------
    InvalidParameter
        ``valid_from`` has no time zone, ``hours`` is not a number in (0,
        :data:`MAX_EVENT_HOURS`] (NaN and infinity included), or the end would fall
        after the year 9999.
    """
    if valid_from.tzinfo is None:
        raise InvalidParameter(
            f"The start of an event needs its time zone (e.g. +02:00 or UTC). Got "
            f"{valid_from.isoformat()}."
        )
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int | float)
        or not 0 < hours <= MAX_EVENT_HOURS
    ):
        raise InvalidParameter(
            f"The 'hours' of an event must be a number of hours in (0, {MAX_EVENT_HOURS}]: an "
            f"event gallery lasts at most 7 days. Got {hours!r} instead."
        )
    start = to_utc(valid_from, "valid_from")
    try:
        return start + timedelta(hours=hours)
    except OverflowError:
        raise InvalidParameter(
            f"An event starting {valid_from.isoformat()} and lasting {hours} hours would end "
            "after the year 9999. Give a real start time."
        ) from None


def open_event(
    gallery: Gallery,
    event_id: str,
    *,
    purpose: str,
    valid_from: datetime,
    valid_to: datetime,
    actor: str,
    operating_point: str | None = None,
) -> Event:
    """Create an event with an empty gallery, valid from ``valid_from`` to ``valid_to``.

    Raises
    ------
    InvalidParameter
        Unknown purpose, or a window that ends before it starts, lasts over 7 days or
        falls outside the years 1 to 9999 in UTC.
    EventError
        An event with that id exists.
    OperatingPointError
        ``operating_point`` (or the gallery's own point) is unknown, or was not
        calibrated for the model of the gallery's pipeline (an augmented
        ``+mirror`` model, a custom embedder): the gate could not match with it.
    """
    actor = check_name(actor, "actor")
    purpose = gallery.check_purpose(purpose)
    if valid_from.tzinfo is None or valid_to.tzinfo is None:
        raise InvalidParameter(
            "An event needs a start and an end, each with its time zone, the end after the "
            f"start. Got {valid_from.isoformat()} to {valid_to.isoformat()}."
        )
    # Two times sharing a named zone (ZoneInfo) compare and subtract in wall time,
    # which is an hour off across a daylight-saving change: work in UTC only.
    start, end = to_utc(valid_from, "valid_from"), to_utc(valid_to, "valid_to")
    if end <= start:
        raise InvalidParameter(
            "An event needs a start and an end, each with its time zone, the end after the "
            f"start. Got {valid_from.isoformat()} to {valid_to.isoformat()}."
        )
    if end - start > timedelta(hours=MAX_EVENT_HOURS):
        raise InvalidParameter(
            "An event gallery is for one event: its window may last at most 7 days. "
            f"Got {end - start} ({start.isoformat()} to {end.isoformat()})."
        )
    # the gallery's own point unless the event names one: as identify and verify do,
    # for the model the gallery's pipeline embeds the gate's probes with
    point = gallery.operating_point(name=operating_point)
    record = EventRecord(
        event_id=check_identifier(event_id, "event id", MAX_EVENT_ID_LENGTH),
        purpose=purpose,
        valid_from=start.isoformat(),
        valid_to=end.isoformat(),
        operating_point=point.name,
        created_at=gallery.now().isoformat(),
        created_by=actor,
    )
    with gallery.store.transaction():
        if gallery.store.get_event(record.event_id) is not None:
            raise EventError(f"An event {record.event_id!r} already exists; choose another id.")
        gallery.store.insert_event(record)
        gallery.audit.append(
            "event.open",
            actor=actor,
            purpose=purpose,
            event_id=record.event_id,
            valid_from=record.valid_from,
            valid_to=record.valid_to,
            operating_point=point.name,
        )
    return _summary(gallery, record)


def get_event(gallery: Gallery, event_id: str) -> Event:
    """The event and its gallery size."""
    with gallery.store.snapshot():
        return _summary(gallery, event_record(gallery, event_id))


def add_member(gallery: Gallery, event_id: str, subject_id: str, *, actor: str) -> Event:
    """Put an enrolled subject into the event's gallery.

    A subject who is already a member of the event stays as they are (an
    event-only member stays event-only, and is still erased when the event
    closes): nothing is changed or audited, so re-running a list of members is
    harmless.

    Raises
    ------
    ConsentError
        The subject's active consent does not cover the event's purpose.
    EventError
        The event is closed; the subject was named by an opt-out of this event
        (they use the manual path); or the subject was enrolled for another event
        only (:func:`enroll_for_event`), whose consent covers that event alone.

    A refusal is audited as ``event.add.refused``.
    """
    with audit_refusal(gallery.audit, "event.add", actor, None, [subject_id],
                       event_id=event_id):
        return _add_member(gallery, event_id, subject_id, actor=actor)


def _add_member(gallery: Gallery, event_id: str, subject_id: str, *, actor: str) -> Event:
    actor = check_name(actor, "actor")
    with gallery.store.transaction():
        record = require_open_event(gallery, event_id)
        if any(m.subject_id == subject_id for m in gallery.store.event_members(event_id)):
            return _summary(gallery, record)  # already a member: left as it is
        gallery.require_consent(subject_id, record.purpose)
        # opt-outs are never overwritten (opt_out refuses a reference already
        # recorded), so these are all that ever named a subject for this event
        if any(o.subject_id == subject_id for o in gallery.store.opt_outs(event_id)):
            raise EventError(
                f"Subject {subject_id!r} opted out of {event_id!r}; they use the manual path."
            )
        owner = event_only_owner(gallery, subject_id)
        if owner is not None:
            raise EventError(
                f"Subject {subject_id!r} was enrolled for the event {owner!r} only, with a "
                f"consent that covers that event alone, so they cannot join {event_id!r}. "
                "Enrol the person for this event (`facetrust event enroll`), or enrol them "
                "as an ordinary subject with a consent of their own."
            )
        gallery.store.put_event_member(
            EventMemberRecord(event_id, subject_id, False, gallery.now().isoformat())
        )
        gallery.audit.append(
            "event.add",
            actor=actor,
            purpose=record.purpose,
            subject_ids=[subject_id],
            event_id=event_id,
        )
        return _summary(gallery, record)


def event_only_owner(gallery: Gallery, subject_id: str) -> str | None:
    """The event ``subject_id`` was enrolled for only, or None (an ordinary subject).

    Only events not yet closed can hold one: closing erases its event-only subjects.
    """
    return search.event_only_owner(gallery.store, subject_id)


def enroll_for_event(
    gallery: Gallery,
    event_id: str,
    document_photo: ImageSource | Embedding,
    *,
    evidence_ref: str,
    evidence_sha256: str,
    notice_version: str,
    actor: str,
    display_name: str | None = None,
) -> str:
    """Enrol a person for this event only, consent captured at enrolment.

    ``document_photo`` is the photo (or its template) the person's document carries.

    The consent covers the event's purpose and expires when the event's
    window ends; the subject is erased when the event closes. Returns the new
    subject id. A failed enrolment (no face, poor quality, the event closed
    meanwhile) leaves no subject and is audited (``event.enroll.refused``, with
    the error).
    """
    actor = check_name(actor, "actor")
    known = gallery.store.get_event(event_id)
    purpose = known.purpose if known is not None else None
    with audit_refusal(gallery.audit, "event.enroll", actor, purpose, [], event_id=event_id):
        return _enroll_for_event(
            gallery, event_id, document_photo, evidence_ref=evidence_ref,
            evidence_sha256=evidence_sha256, notice_version=notice_version, actor=actor,
            display_name=display_name,
        )


def _enroll_for_event(
    gallery: Gallery,
    event_id: str,
    document_photo: ImageSource | Embedding,
    *,
    evidence_ref: str,
    evidence_sha256: str,
    notice_version: str,
    actor: str,
    display_name: str | None,
) -> str:
    record = require_open_event(gallery, event_id)
    template = (
        document_photo
        if isinstance(document_photo, Embedding)
        else gallery.pipeline.embed_one(document_photo).embedding
    )
    subject_id = f"{event_id}.{uuid.uuid4().hex[:12]}"
    with gallery.batch():
        # closed while the photo was processed: nobody enrolled for a closed
        # event (closing would never erase them)
        require_open_event(gallery, event_id)
        _enroll_member(gallery, record, subject_id, template, actor=actor,
                       evidence_ref=evidence_ref, evidence_sha256=evidence_sha256,
                       notice_version=notice_version, display_name=display_name)
    return subject_id


def _enroll_member(
    gallery: Gallery,
    record: EventRecord,
    subject_id: str,
    template: Embedding,
    *,
    actor: str,
    evidence_ref: str,
    evidence_sha256: str,
    notice_version: str,
    display_name: str | None,
) -> None:
    event_id = record.event_id
    gallery.add_subject(subject_id, display_name=display_name, actor=actor)
    gallery.grant_consent(
        subject_id,
        [record.purpose],
        expires_at=datetime.fromisoformat(record.valid_to),
        evidence_ref=evidence_ref,
        evidence_sha256=evidence_sha256,
        notice_version=notice_version,
        actor=actor,
    )
    gallery.enroll(subject_id, [template], actor=actor)
    gallery.store.put_event_member(
        EventMemberRecord(event_id, subject_id, True, gallery.now().isoformat())
    )
    gallery.audit.append(
        "event.enroll",
        actor=actor,
        purpose=record.purpose,
        subject_ids=[subject_id],
        event_id=event_id,
        event_only=True,
    )


def opt_out(
    gallery: Gallery,
    event_id: str,
    reference: str,
    *,
    actor: str,
    subject_id: str | None = None,
) -> Event:
    """Record that the person with ``reference`` opted out; no face is involved.

    A member named by ``subject_id`` leaves the event's gallery at once (an
    event-only member is erased, before the opt-out is recorded: an opt-out
    killed half-way leaves them a member, whom closing the event erases). A
    subject of the gallery who is not yet a member (they opted out at booking,
    before the passenger list was loaded) is recorded too, so that
    :func:`add_member` refuses them later. Without ``subject_id`` only the
    reference is recorded (the person is not enrolled).

    The face crops the event's gate kept of the subject (``keep_crop_hours``)
    are deleted with the opt-out, in its transaction, not left to the sweep or
    the event's close: the ``event.opt-out`` audit event names them
    (``probe_crop_ids``, ``probe_crops_deleted``). An event-only member's go
    with the member, whom the opt-out erases.

    Each person needs a reference of their own: a reference already recorded
    for the event is refused, so one opt-out can never overwrite another (and
    the subject it named, who could then be added and matched again).

    Raises
    ------
    InvalidParameter
        ``subject_id`` is not a valid id, or names neither a member of the event
        nor a subject of the gallery (a typo would leave the person in the
        gallery): nothing is recorded.
    EventError
        The event is unknown or closed, ``reference`` already records an
        opt-out of this event, or an opt-out of this event already names
        ``subject_id``: nothing is recorded.
    """
    actor = check_name(actor, "actor")
    reference = check_name(reference, "reference")
    if subject_id is not None:
        subject_id = check_subject_id(subject_id)
    with gallery.store.snapshot():
        _, members = _check_opt_out(gallery, event_id, reference, subject_id)
    member = members.get(subject_id) if subject_id is not None else None
    if member is not None and member.event_only:
        # Erased first, while still a member: an opt-out killed half-way leaves a
        # member that closing the event (or this opt-out again) erases, never an
        # event-only traveller outside the event that closing would not find.
        subject = gallery.store.get_subject(member.subject_id)
        if subject is not None and subject.erased_at is None:  # else: erased by a killed try
            gallery.forget(member.subject_id, actor=actor,
                           reason=f"opted out of event {event_id}")
    with gallery.store.transaction():
        record, members = _check_opt_out(gallery, event_id, reference, subject_id)
        if subject_id in members:
            gallery.store.remove_event_member(event_id, subject_id)
        # an opt-out withdraws the person from the event: the face crops its gate kept
        # of them go now, not at the sweep or the close
        crops = [c.crop_id for c in gallery.store.probe_crops(event_id)
                 if subject_id is not None and c.subject_id == subject_id]
        crops_deleted = gallery.store.delete_probe_crops(crops)
        gallery.store.insert_opt_out(
            OptOutRecord(event_id, reference, subject_id, gallery.now().isoformat())
        )
        gallery.audit.append(
            "event.opt-out",
            actor=actor,
            purpose=record.purpose,
            subject_ids=[subject_id] if subject_id else [],
            event_id=event_id,
            reference=reference,
            face_captured=False,
            probe_crops_deleted=crops_deleted,
            probe_crop_ids=crops,
        )
    if crops_deleted:
        gallery.store.reclaim()
    return get_event(gallery, event_id)


def _check_opt_out(
    gallery: Gallery, event_id: str, reference: str, subject_id: str | None
) -> tuple[EventRecord, dict[str, EventMemberRecord]]:
    """The open event and its members by id, if ``reference`` and ``subject_id`` may
    record an opt-out of it (see :func:`opt_out`)."""
    record = require_open_event(gallery, event_id)
    members = {m.subject_id: m for m in gallery.store.event_members(event_id)}
    opt_outs = gallery.store.opt_outs(event_id)
    if subject_id is not None and subject_id not in members:
        _check_opt_out_of_non_member(gallery, event_id, subject_id, opt_outs)
    # canonical: a reference recorded before the gallery stored text in NFC
    recorded = [o for o in opt_outs if canonical(o.reference) == reference]
    if recorded:
        raise EventError(
            f"The reference {reference!r} already records an opt-out of {event_id!r} "
            f"(on {recorded[0].opted_out_at}), so nothing was recorded. Give each person "
            "a reference of their own (booking and seat, say); a person who already "
            "opted out needs nothing more."
        )
    return record, members


def _check_opt_out_of_non_member(
    gallery: Gallery, event_id: str, subject_id: str, opt_outs: Sequence[OptOutRecord]
) -> None:
    """Refuse an opt-out naming ``subject_id``, not a member of the event, unless it
    names a subject of the gallery that no opt-out of the event names yet."""
    named = [o for o in opt_outs if o.subject_id == subject_id]
    if named:
        raise EventError(
            f"Subject {subject_id!r} already opted out of {event_id!r} (reference "
            f"{named[0].reference!r}, on {named[0].opted_out_at}), so nothing was recorded: "
            "they are out of the event's gallery and use the manual path."
        )
    subject = gallery.store.get_subject(subject_id)
    if subject is None or subject.erased_at is not None:
        raise InvalidParameter(
            f"Subject {subject_id!r} is not a member of the event {event_id!r} nor a "
            "subject of this gallery, so nothing was recorded. Check the id (ids are "
            "case-sensitive) and try again, or, for a person who is not enrolled, record "
            "the reference alone without a subject id (--subject)."
        )


def close_event(gallery: Gallery, event_id: str, *, actor: str) -> EventClosure:
    """Dissolve the event's gallery: erase event-only subjects and every probe crop.

    The event-only subjects are erased first, while the event is still open and
    lists them: a close killed half-way leaves the event open, and closing it
    again erases the rest (a closed event no longer names its members, so it
    could not).
    """
    actor = check_name(actor, "actor")
    with gallery.store.snapshot():
        require_open_event(gallery, event_id)
        event_only = [m for m in gallery.store.event_members(event_id) if m.event_only]
        # an event-only subject's crops go with the subject, just below
        crops_before = [c.crop_id for c in gallery.store.probe_crops(event_id)]
    erased = _erase_event_only(gallery, event_only, event_id, actor)
    with gallery.store.transaction():
        record = require_open_event(gallery, event_id)
        members = gallery.store.event_members(event_id)
        left = [c.crop_id for c in gallery.store.probe_crops(event_id)]
        crops = list(dict.fromkeys(crops_before + left))
        crops_deleted = gallery.store.delete_probe_crops(left) + len(set(crops_before) - set(left))
        for member in members:
            gallery.store.remove_event_member(event_id, member.subject_id)
        gallery.store.close_event(event_id, gallery.now().isoformat())
        gallery.audit.append(
            "event.close",
            actor=actor,
            purpose=record.purpose,
            subject_ids=list(erased),
            event_id=event_id,
            members_removed=len(members),
            probe_crops_deleted=crops_deleted,
            probe_crop_ids=crops,
        )
    # enrolled for the event while the others were erased: erased now (own erase events)
    first = {m.subject_id for m in event_only}
    erased += _erase_event_only(
        gallery, [m for m in members if m.event_only and m.subject_id not in first], event_id,
        actor,
    )
    gallery.store.reclaim()
    return EventClosure(event_id, len(members), erased, crops_deleted)


def _erase_event_only(
    gallery: Gallery, members: Sequence[EventMemberRecord], event_id: str, actor: str
) -> tuple[str, ...]:
    erased = []
    for member in members:
        try:
            gallery.forget(member.subject_id, actor=actor, reason=f"event {event_id} closed")
        except UnknownSubject:
            continue  # already erased (e.g. opted out)
        erased.append(member.subject_id)
    return tuple(erased)
