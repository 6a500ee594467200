"""The README's demo: the boarding gate done right, on the sample photos.

A gallery is created, a handful of consenting people are enrolled, a flight's
event gallery is opened, one passenger opts out (manual path, no face), one is
enrolled just for the flight from a document photo, and the gate runs over a
generated video of arrivals that includes a stranger. Then the event closes,
and the demo shows that event-only templates and probe crops are gone.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .api import default_pipeline
from .errors import InvalidParameter
from .gallery import Gallery
from .gate import decisions, events
from .gate.arrivals import write_arrivals_video
from .gate.session import GatePolicy, run_gate
from .matching import compare

EVENT = "flight-UA123"
#: Sample identities kept apart from each other in the demo: the sample also
#: holds pairs the model confuses (sisters; see the fairness report).
ENROLLED = ("Colin_Powell", "George_W_Bush", "Gloria_Macapagal_Arroyo", "Jennifer_Lopez")
OPTED_OUT = "Kofi_Annan"
EVENT_ONLY = "Vicente_Fox"
STRANGER = "Serena_Williams"


def _photos(folder: Path, name: str) -> list[Path]:
    photos = sorted((folder / name).glob("*.jpg"))
    if len(photos) < 2:
        raise InvalidParameter(
            f"The demo needs at least two photos of {name} under {str(folder)!r}. Run it from "
            "the repository root, or pass --photos with the path of the repository's "
            "tests/data/lfw folder."
        )
    return photos


def run_gate_demo(
    photos: Path, echo: Callable[[str], None] = print, workdir: Path | None = None
) -> bool:
    """Run the boarding-gate scenario; returns True when every decision is the expected one."""
    with tempfile.TemporaryDirectory(prefix="facetrust-demo-") as scratch:
        folder = workdir or Path(scratch)
        return _scenario(photos, folder, echo)


def _scenario(photos: Path, folder: Path, echo: Callable[[str], None]) -> bool:
    pictures = {n: _photos(photos, n) for n in (*ENROLLED, OPTED_OUT, EVENT_ONLY, STRANGER)}
    form = hashlib.sha256(b"signed consent form (demo)").hexdigest()
    echo("== 1:1 check of the model on the sample")
    pipeline = default_pipeline()
    a, b = (pipeline.embed_one(p).embedding for p in pictures[ENROLLED[0]][:2])
    c = pipeline.embed_one(pictures[STRANGER][0]).embedding
    for label, verdict in (("same person", compare(a, b)), ("different people", compare(a, c))):
        echo(
            f"   {label}: {'MATCH' if verdict.match else 'NO MATCH'} at distance "
            f"{verdict.distance:.3f} (threshold {verdict.threshold:.3f}, {verdict.operating_point})"
        )

    echo(f"== Gallery in {folder}: consenting people enrolled for 'boarding'")
    gallery, _ = Gallery.init_folder(folder / "gallery")
    with gallery:
        now = datetime.now(UTC)
        for name in (*ENROLLED, OPTED_OUT):
            gallery.add_subject(name, display_name=name.replace("_", " "), actor="desk")
            gallery.grant_consent(
                name,
                ["boarding"],
                expires_at=now + timedelta(days=365),
                evidence_ref=f"form-{name}",
                evidence_sha256=form,
                notice_version="2026-11",
                actor="desk",
            )
            gallery.enroll(name, [pictures[name][0]], actor="desk")
            echo(f"   enrolled {name} (consent: boarding, 1 year)")

        echo(f"== Event {EVENT}: gallery of this flight's passengers only, for 3 hours")
        events.open_event(
            gallery,
            EVENT,
            purpose="boarding",
            valid_from=now - timedelta(minutes=1),
            valid_to=now + timedelta(hours=3),
            actor="agent",
        )
        for name in (*ENROLLED, OPTED_OUT):
            events.add_member(gallery, EVENT, name, actor="agent")
        traveller = events.enroll_for_event(
            gallery,
            EVENT,
            pictures[EVENT_ONLY][0],
            evidence_ref="kiosk-form-77",
            evidence_sha256=form,
            notice_version="2026-11",
            actor="agent",
        )
        echo(
            f"   {len(ENROLLED) + 1} members; {EVENT_ONLY} enrolled for this flight only "
            f"as {traveller}"
        )
        events.opt_out(gallery, EVENT, "seat 14C", actor="agent", subject_id=OPTED_OUT)
        decisions.record_manual_passage(gallery, EVENT, "seat 14C", actor="agent", gate_id="B12")
        echo(
            f"   {OPTED_OUT} (seat 14C) opted out: removed from the flight's gallery, "
            "boards on the manual path, no face captured"
        )

        arrivals = [*ENROLLED, EVENT_ONLY, STRANGER]
        video = folder / "arrivals.mp4"
        write_arrivals_video([pictures[n][1] for n in arrivals], video)
        echo(
            f"== Gate B12: {len(arrivals)} arrivals in {video.name} "
            f"(a different photo of each person; {STRANGER} is not on the flight)"
        )
        expected = {**{n: n for n in ENROLLED}, EVENT_ONLY: traveller, STRANGER: None}
        started = time.perf_counter()
        ok = True
        gate_decisions = list(
            run_gate(
                gallery,
                EVENT,
                video,
                gate_id="B12",
                actor="gate-B12",
                policy=GatePolicy(keep_crop_hours=12),
            )
        )
        seconds = time.perf_counter() - started
        for name, decision in zip(arrivals, gate_decisions, strict=False):
            right = decision.subject_id == expected[name]
            ok &= right
            outcome = (
                f"BOARD {decision.subject_id} (distance {decision.distance:.3f})"
                if decision.outcome == "match"
                else "REFER TO STAFF"
            )
            echo(f"   {name:<24} -> {outcome}{'' if right else '   <-- UNEXPECTED'}")
        ok &= len(gate_decisions) == len(arrivals)
        echo(f"   {len(gate_decisions)} decisions in {seconds:.1f} s")

        echo("== Audit trail (hash-chained)")
        for record in gallery.audit.events():
            if record.kind.startswith(("event.", "gate.")):
                detail = record.fields.get("outcome") or record.fields.get("reference") or ""
                echo(
                    f"   #{record.seq:<3} {record.kind:<14} {record.actor or '':<9} "
                    f"{', '.join(record.subject_ids) or '-':<28} {detail}"
                )
        report = gallery.audit.verify()
        echo(f"   chain: {'intact' if report.ok else 'BROKEN'} ({report.events_checked} events)")

        echo(f"== Closing {EVENT}")
        crops_before = len(gallery.store.probe_crops(EVENT))
        closure = events.close_event(gallery, EVENT, actor="agent")
        left = len(gallery.store.templates_of(traveller)) + len(gallery.store.probe_crops())
        echo(
            f"   matched probe crops kept (encrypted, 12 h max): {crops_before}, now deleted: "
            f"{closure.probe_crops_deleted}; event-only subjects erased: "
            f"{', '.join(closure.subjects_erased)}; their templates and crops left: {left}"
        )
        ok &= left == 0 and closure.subjects_erased == (traveller,)
    return ok
