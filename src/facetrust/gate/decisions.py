"""What the gate decides: match a traveller against the event's gallery, or the manual path.

:func:`match_at_gate` searches only the event's members, only while the event
is open and within its window, through the gallery's one template search
(:meth:`facetrust.gallery.Gallery.search`), and audits every decision, a
referral to staff included, and a decision refused once the face was processed
(the event closed or its window ended meanwhile), each refusal written by
:func:`refuse_at_gate`, which also records a person a stopped gate run never
decided.
:func:`record_manual_passage` audits a passage on
the manual path, which takes no image. A matched face crop is kept only when
asked, encrypted under the subject's data key, and deleted by
:func:`sweep_probe_crops` once its time is up.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import EventError, InvalidParameter, RunStopped
from ..faces import Embedding
from ..gallery import Gallery
from ..gallery.checks import check_name
from ..gallery.refusals import record_refusal
from ..store.base import ProbeCropRecord
from .events import MAX_EVENT_HOURS, require_event_in_window, require_open_event

#: Longest time a matched face crop may be kept, in hours: the longest event
#: (closing an event deletes its crops anyway).
MAX_CROP_HOURS = MAX_EVENT_HOURS


def check_keep_crop_hours(hours: float | None) -> float | None:
    """``hours`` if it is None (keep no crop) or a number of hours in [0, :data:`MAX_CROP_HOURS`].

    0 keeps no crop, as None does.

    Raises
    ------
    InvalidParameter
        A negative number, NaN, infinity, more than :data:`MAX_CROP_HOURS`, or not a number.
    """
    if hours is None:
        return None
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not (
        0 <= hours <= MAX_CROP_HOURS
    ):
        raise InvalidParameter(
            "The 'keep_crop_hours' of a gate must be a number of hours in "
            f"[0, {MAX_CROP_HOURS}] (0 keeps no face crop). Got {hours!r} instead."
        )
    return hours


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one person.

    ``outcome`` is ``"match"`` (board: ``subject_id`` and ``distance`` set),
    ``"refer"`` (no member within the threshold: a person checks documents) or
    ``"no-usable-face"`` (the camera never got a face of passing quality: a
    person checks documents). Lower distance is more similar.

    ``others_in_frame`` is the most faces seen beside this person's in any one
    frame before the decision (0: they stood alone). Each face gets its own
    decision; a non-zero count tells staff that someone else was in front of
    the camera at the same time.
    """

    event_id: str
    gate_id: str
    outcome: str
    subject_id: str | None
    distance: float | None
    threshold: float
    operating_point: str
    decided_at: str
    audit_seq: int
    frame_index: int | None = None
    latency_s: float | None = None
    others_in_frame: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_manual_passage(
    gallery: Gallery, event_id: str, reference: str, *, actor: str, gate_id: str
) -> int:
    """Audit that a person passed the gate on the manual path (documents checked by staff).

    This path takes no image: nothing is captured or processed. Returns the
    audit sequence number.

    Raises
    ------
    InvalidParameter
        ``reference`` or ``gate_id`` is empty, over 200 characters, or holds
        control or invisible characters (a line break, say).
    EventError
        The event is unknown or closed.
    """
    actor = check_name(actor, "actor")
    reference = check_name(reference, "reference")
    gate_id = check_name(gate_id, "gate_id")
    with gallery.store.transaction():
        record = require_open_event(gallery, event_id)
        event = gallery.audit.append(
            "gate.manual",
            actor=actor,
            purpose=record.purpose,
            event_id=event_id,
            gate_id=gate_id,
            reference=reference,
            face_captured=False,
        )
    return event.seq


def match_at_gate(
    gallery: Gallery,
    event_id: str,
    probe: Embedding | None,
    *,
    gate_id: str,
    actor: str,
    crop_jpeg: bytes | None = None,
    keep_crop_hours: float | None = None,
    frame_index: int | None = None,
    latency_s: float | None = None,
    others_in_frame: int = 0,
) -> GateDecision:
    """Match one traveller's probe against the event's gallery and audit the decision.

    ``probe`` None means the camera got no usable face: the decision is to
    refer the person to staff. The probe is never stored; a matched face crop
    is kept (encrypted under the subject's data key, erased with the subject)
    only when ``keep_crop_hours`` is more than 0, and deleted by
    :func:`sweep_probe_crops` once that many hours have passed; the decision's
    audit event names the kept crop (``crop_id``, ``crop_delete_after``).
    ``others_in_frame`` (see :class:`GateDecision`) is recorded with the decision.
    A matched subject who left the event while the probe was searched (an
    opt-out) is not boarded: the person is referred to staff.

    Raises
    ------
    EventError
        The event is unknown, closed, not yet started or over, when called or by the
        time the decision is written: the refusal is audited
        (``gate.decision.refused``, see :func:`refuse_at_gate`) and nothing is kept.
    InvalidParameter
        ``keep_crop_hours`` is not a number of hours in [0, :data:`MAX_CROP_HOURS`],
        ``gate_id`` is not a name :func:`~facetrust.gallery.checks.check_name`
        accepts, or ``others_in_frame`` is not a whole number >= 0 (audited as
        ``gate.decision.refused`` too).

    """
    try:
        keep_crop_hours = check_keep_crop_hours(keep_crop_hours)
        gate_id = check_name(gate_id, "gate_id")
        if isinstance(others_in_frame, bool) or not isinstance(others_in_frame, int) or (
            others_in_frame < 0
        ):
            raise InvalidParameter(
                "The 'others_in_frame' of a gate decision must be a whole number >= 0. Got "
                f"{others_in_frame!r} instead."
            )
        return _decide(
            gallery, event_id, probe, gate_id=gate_id, actor=actor, crop_jpeg=crop_jpeg,
            keep_crop_hours=keep_crop_hours, frame_index=frame_index, latency_s=latency_s,
            others_in_frame=others_in_frame,
        )
    except (InvalidParameter, EventError) as refusal:
        refuse_at_gate(
            gallery, event_id, refusal, gate_id=gate_id, actor=actor, frame_index=frame_index,
            others_in_frame=others_in_frame,
        )
        raise


def refuse_at_gate(
    gallery: Gallery,
    event_id: str,
    reason: BaseException,
    *,
    gate_id: str,
    actor: str,
    frame_index: int | None = None,
    others_in_frame: int = 0,
) -> int:
    """Audit that one traveller's decision was refused.

    The one place that writes ``gate.decision.refused`` (through the gallery's
    :func:`~facetrust.gallery.refusals.record_refusal`), whether the call's
    parameters, the event (closed, or outside its window) or the end of the
    run refused it. The event says what was refused (the event and its
    purpose, the gate, the frame) and why: ``error`` names the type of
    ``reason`` and ``message`` is its message (:class:`~facetrust.errors.RunStopped`
    when ``reason`` is not an ``Exception``: Ctrl-C, or the caller closed the
    run). It holds no face data and no probe hash, and nothing of the face is
    kept (``probe_kept`` is false). :func:`match_at_gate` records its own
    refusals; a gate run records with it each person it had seen but not
    decided when it stopped (see :func:`~facetrust.gate.session.run_gate`).
    Returns the audit sequence number.
    """
    record = gallery.store.get_event(event_id)
    if not isinstance(reason, Exception):  # Ctrl-C, or the caller closed the run
        reason = RunStopped(
            "The gate run was stopped (interrupted, or its caller stopped reading decisions) "
            "before this person was decided."
        )
    return record_refusal(
        gallery.audit, "gate.decision", reason, actor=actor,
        purpose=record.purpose if record is not None else None, subjects=[],
        event_id=event_id, gate_id=gate_id, frame_index=frame_index,
        others_in_frame=others_in_frame, probe_kept=False,
    )


def _decide(
    gallery: Gallery,
    event_id: str,
    probe: Embedding | None,
    *,
    gate_id: str,
    actor: str,
    crop_jpeg: bytes | None,
    keep_crop_hours: float | None,
    frame_index: int | None,
    latency_s: float | None,
    others_in_frame: int,
) -> GateDecision:
    record = require_event_in_window(gallery, event_id)
    now = gallery.now()
    point = gallery.operating_point(
        probe.model_id if probe is not None else None, record.operating_point
    )
    subject_id: str | None = None
    distance: float | None = None
    probe_sha256 = ""
    searched = 0
    if probe is not None:
        with gallery.store.snapshot():
            members = [m.subject_id for m in gallery.store.event_members(event_id)]
        found = gallery.search(
            probe, purpose=record.purpose, k=1, operating_point=point.name, only=members
        )
        searched = found.searched
        probe_sha256 = hashlib.sha256(probe.vector.tobytes()).hexdigest()
        if found.hits:
            subject_id, distance = found.hits[0].subject_id, found.hits[0].distance
    outcome = "match" if subject_id else ("refer" if probe is not None else "no-usable-face")
    kept_crop: str | None = None
    delete_after: str | None = None
    with gallery.store.transaction():
        # The event may have closed, its window ended or the subject opted out while
        # the probe was searched: checked again where the decision is written, so a
        # closed event gets no decision and no crop (closing deletes them all).
        record = require_event_in_window(gallery, event_id)
        if subject_id is not None and all(
            m.subject_id != subject_id for m in gallery.store.event_members(event_id)
        ):
            subject_id, distance = None, None
            outcome = "refer"
        if subject_id is not None and crop_jpeg is not None and keep_crop_hours:
            crop_id = uuid.uuid4().hex
            sealed = gallery.seal_for_subject(subject_id, crop_jpeg, f"probe-crop:{crop_id}")
            if sealed is not None:
                kept_crop = crop_id
                delete_after = (now + timedelta(hours=keep_crop_hours)).isoformat()
                gallery.store.insert_probe_crop(
                    ProbeCropRecord(
                        crop_id, event_id, subject_id, sealed, now.isoformat(), delete_after
                    )
                )
        event = gallery.audit.append(
            "gate.decision",
            actor=actor,
            purpose=record.purpose,
            subject_ids=[subject_id] if subject_id else [],
            event_id=event_id,
            gate_id=gate_id,
            outcome=outcome,
            distance=distance,
            operating_point=point.name,
            threshold=point.threshold,
            probe_sha256=probe_sha256,
            subjects_searched=searched,
            reference_gallery={"gallery_id": gallery.gallery_id, "event_id": event_id},
            frame_index=frame_index,
            others_in_frame=others_in_frame,
            crop_id=kept_crop,
            crop_delete_after=delete_after,
        )
    return GateDecision(
        event_id,
        gate_id,
        outcome,
        subject_id,
        distance,
        point.threshold,
        point.name,
        now.isoformat(),
        event.seq,
        frame_index,
        latency_s,
        others_in_frame,
    )


def sweep_probe_crops(gallery: Gallery, *, actor: str = "system") -> int:
    """Delete every kept probe crop past its deadline; returns how many.

    The ``gate.crop-sweep`` audit event names the crops deleted (``crop_ids``)
    and their subjects.
    """
    now = gallery.now()
    with gallery.store.transaction():
        due = [
            c for c in gallery.store.probe_crops()
            if datetime.fromisoformat(c.delete_after) <= now
        ]
        deleted = gallery.store.delete_probe_crops([c.crop_id for c in due])
        gallery.audit.append(
            "gate.crop-sweep",
            actor=actor,
            subject_ids=sorted({c.subject_id for c in due}),
            deleted=deleted,
            crop_ids=[c.crop_id for c in due],
        )
    if deleted:
        gallery.store.reclaim()
    return deleted
