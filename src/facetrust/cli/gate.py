"""``facetrust event`` and ``facetrust gate``: event galleries and the boarding gate."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path

import click

from ..gallery import Gallery
from ..gate import decisions, events
from ..gate.decisions import MAX_CROP_HOURS
from ..gate.events import MAX_EVENT_HOURS
from ..gate.session import MAX_WINDOW_S, GatePolicy, run_gate
from ..times import parse_time
from .gallery import actor_option, emit, gallery_option


@click.group()
def event() -> None:
    """Event galleries: a time-boxed gallery per flight, exam or entrance."""


@event.command("open")
@click.argument("event_id")
@click.option("--purpose", required=True, help="The consented purpose the event serves.")
@click.option("--from", "valid_from", required=True, help="Start, ISO time (UTC if naive).")
@click.option(
    "--hours",
    type=click.FloatRange(0, MAX_EVENT_HOURS, min_open=True),
    default=None,
    help=f"Length in hours, at most {MAX_EVENT_HOURS} (or --to).",
)
@click.option("--to", "valid_to", default=None, help="End, ISO time (UTC if naive).")
@click.option(
    "--operating-point", default=None,
    help="Threshold name for this event's gate (default: the gallery's own).",
)
@gallery_option
@actor_option
def open_(
    event_id: str,
    purpose: str,
    valid_from: str,
    hours: float | None,
    valid_to: str | None,
    operating_point: str | None,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Open EVENT_ID with an empty gallery for one purpose and time window."""
    start = parse_time(valid_from, "from")
    if (hours is None) == (valid_to is None):
        raise click.UsageError("give exactly one of --hours and --to")
    end = events.event_end(start, hours) if hours is not None else parse_time(str(valid_to), "to")
    with Gallery.find(gallery_path) as gallery:
        emit(
            events.open_event(
                gallery,
                event_id,
                purpose=purpose,
                valid_from=start,
                valid_to=end,
                actor=actor,
                operating_point=operating_point,
            )
        )


@event.command("show")
@click.argument("event_id")
@gallery_option
def show(event_id: str, gallery_path: str | None) -> None:
    """Show EVENT_ID: window, status, members and opt-outs."""
    with Gallery.find(gallery_path) as gallery:
        emit(events.get_event(gallery, event_id))


@event.command("add")
@click.argument("event_id")
@click.argument("subject_ids", nargs=-1, required=True)
@gallery_option
@actor_option
def add(event_id: str, subject_ids: tuple[str, ...], gallery_path: str | None, actor: str) -> None:
    """Add enrolled subjects whose consent covers the event's purpose."""
    with Gallery.find(gallery_path) as gallery:
        for subject_id in subject_ids:
            summary = events.add_member(gallery, event_id, subject_id, actor=actor)
        emit(summary)


@event.command("enroll")
@click.argument("event_id")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False))
@click.option("--evidence-ref", required=True, help="Id of the signed consent form.")
@click.option(
    "--evidence-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The signed form's file (its SHA-256 is recorded).",
)
@click.option("--notice-version", required=True, help="Version of the notice shown.")
@click.option("--name", "display_name", default=None, help="Display name.")
@gallery_option
@actor_option
def enroll(
    event_id: str,
    photo: str,
    evidence_ref: str,
    evidence_file: str,
    notice_version: str,
    display_name: str | None,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Enrol a person for EVENT_ID only, from a document PHOTO; erased when it closes."""
    import hashlib

    digest = hashlib.sha256(Path(evidence_file).read_bytes()).hexdigest()
    with Gallery.find(gallery_path) as gallery:
        subject_id = events.enroll_for_event(
            gallery,
            event_id,
            photo,
            evidence_ref=evidence_ref,
            evidence_sha256=digest,
            notice_version=notice_version,
            actor=actor,
            display_name=display_name,
        )
        emit({"event_id": event_id, "subject_id": subject_id, "event_only": True})


@event.command("opt-out")
@click.argument("event_id")
@click.argument("reference")
@click.option("--subject", "subject_id", default=None, help="The member's subject id, if any.")
@gallery_option
@actor_option
def opt_out(
    event_id: str, reference: str, subject_id: str | None, gallery_path: str | None, actor: str
) -> None:
    """Record that REFERENCE (booking, seat) opted out; no face is taken."""
    with Gallery.find(gallery_path) as gallery:
        emit(events.opt_out(gallery, event_id, reference, actor=actor, subject_id=subject_id))


@event.command("close")
@click.argument("event_id")
@gallery_option
@actor_option
def close(event_id: str, gallery_path: str | None, actor: str) -> None:
    """Close EVENT_ID: dissolve its gallery, erase event-only subjects and probe crops."""
    with Gallery.find(gallery_path) as gallery:
        emit(events.close_event(gallery, event_id, actor=actor))


@click.group()
def gate() -> None:
    """The gate: match camera frames against an event's gallery."""


@gate.command("run")
@click.option("--event", "event_id", required=True, help="The open event to match against.")
@click.option("--source", required=True, help="Video file, camera index (0) or image folder.")
@click.option("--gate-id", default="gate-1", show_default=True, help="This gate's name.")
@click.option(
    "--keep-crops-hours",
    type=click.FloatRange(0, MAX_CROP_HOURS),
    default=None,
    help=f"Keep matched face crops (encrypted) this many hours, at most {MAX_CROP_HOURS}; "
    "default or 0: keep none.",
)
@click.option(
    "--window",
    type=click.FloatRange(0, MAX_WINDOW_S),
    default=0.3,
    show_default=True,
    help="Seconds to look for a better frame after the first good one.",
)
@gallery_option
@actor_option
def run(
    event_id: str,
    source: str,
    gate_id: str,
    keep_crops_hours: float | None,
    window: float,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Match each person at the gate: one JSON line per decision on stdout."""
    policy = GatePolicy(window_s=window, keep_crop_hours=keep_crops_hours)
    with Gallery.find(gallery_path) as gallery, closing(
        run_gate(gallery, event_id, source, gate_id=gate_id, actor=actor, policy=policy)
    ) as decisions_made:
        # closed while the gallery is open: a run stopped early (Ctrl-C) audits
        # the people it had seen but not decided
        for decision in decisions_made:
            click.echo(json.dumps(decision.to_dict()))
            word = {"match": "BOARD", "refer": "REFER TO STAFF"}.get(
                decision.outcome, "REFER TO STAFF (no usable face)"
            )
            others = decision.others_in_frame
            beside = f" ({others} other face{'s' if others > 1 else ''} in frame)" if others else ""
            click.echo(f"{word} {decision.subject_id or ''}".rstrip() + beside, err=True)
            sys.stdout.flush()


@gate.command("manual")
@click.option("--event", "event_id", required=True)
@click.option("--reference", required=True, help="Booking or seat of the traveller.")
@click.option("--gate-id", default="gate-1", show_default=True)
@gallery_option
@actor_option
def manual(
    event_id: str, reference: str, gate_id: str, gallery_path: str | None, actor: str
) -> None:
    """Record a passage on the manual path (documents checked; no face captured)."""
    with Gallery.find(gallery_path) as gallery:
        seq = decisions.record_manual_passage(
            gallery, event_id, reference, actor=actor, gate_id=gate_id
        )
        emit({"event_id": event_id, "reference": reference, "audit_seq": seq})


@gate.command("sweep-crops")
@gallery_option
@actor_option
def sweep_crops(gallery_path: str | None, actor: str) -> None:
    """Delete kept probe crops whose retention has passed (run it hourly)."""
    with Gallery.find(gallery_path) as gallery:
        emit({"deleted": decisions.sweep_probe_crops(gallery, actor=actor)})


COMMANDS = [event, gate]
