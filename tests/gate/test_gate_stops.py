"""A gate run that stops early, from the installed command: every person whose face was
processed leaves an audit event (a decision, or a refusal saying why), and a damaged
video is facetrust's one-line error, without FFmpeg's own messages."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrust import FacePipeline
from facetrust.audit import AuditEvent
from facetrust.gallery import Gallery
from facetrust.gate import events
from facetrust.gate.arrivals import write_arrivals_video
from facetrust.images import load_image
from installed_command import INSTALLED, installed_runner, shell_env

EVENT = "flight-UA123"
LFW = Path(__file__).parent.parent / "data" / "lfw"
MEMBERS = ("Kofi_Annan", "Vicente_Fox", "Colin_Powell", "George_W_Bush")


def _photo(name: str, n: int) -> Path:
    return sorted((LFW / name).glob("*.jpg"))[n]


@pytest.fixture
def flight(tmp_path: Path, grant: Callable[..., str], pipeline: FacePipeline) -> Path:
    """A gallery folder with an open event whose members are the MEMBERS, each enrolled
    from their first photo."""
    folder = tmp_path / "gallery"
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        for name in MEMBERS:
            gallery.add_subject(name, actor="registrar")
            grant(gallery, name, ("boarding",))
            gallery.enroll(name, [pipeline.embed_one(_photo(name, 0)).embedding],
                           actor="registrar")
        now = gallery.now()
        events.open_event(gallery, EVENT, purpose="boarding", actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=3))
        for name in MEMBERS:
            events.add_member(gallery, EVENT, name, actor="agent")
    return folder


def _gate_events(folder: Path, after: int) -> list[AuditEvent]:
    with Gallery.find(folder) as gallery:
        assert gallery.audit.verify().ok
        return [e for e in gallery.audit.events() if e.seq > after and e.kind.startswith("gate.")]


def _head(folder: Path) -> int:
    with Gallery.find(folder) as gallery:
        return gallery.audit.head().seq


def _start_gate(
    folder: Path, source: Path, *options: str, **settings: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [INSTALLED, "gate", "run", "--event", EVENT, "--source", str(source), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=shell_env(folder, FACETRUST_ACTOR="gate", **settings),
    )


def _finish(gate: subprocess.Popen[str]) -> tuple[str, str]:
    """The rest of the run's stdout and all its stderr, once it has exited.

    Not ``communicate``: it reads the pipe's file descriptor and would miss lines a
    ``readline`` already took into the stream's buffer.
    """
    assert gate.stdout is not None and gate.stderr is not None
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(gate.stderr.read()), daemon=True)
    reader.start()
    out = gate.stdout.read()
    gate.wait(timeout=300)
    reader.join(timeout=300)
    return out, "".join(errors)


def _assert_refusal_holds_no_face(refused: AuditEvent, error: str) -> None:
    assert refused.fields["error"] == error and refused.fields["probe_kept"] is False
    assert "probe_sha256" not in refused.fields and refused.subject_ids == ()
    assert refused.fields["event_id"] == EVENT and refused.fields["gate_id"] == "gate-1"


@pytest.mark.slow  # a gate run from the installed command, models included
def test_a_decision_refused_because_the_event_closed_mid_run_is_audited(
    flight: Path, tmp_path: Path
) -> None:
    video = tmp_path / "arrivals.mp4"
    write_arrivals_video([_photo(name, 1) for name in MEMBERS] * 4, video)  # 16 arrivals
    head = _head(flight)
    gate = _start_gate(flight, video, "--keep-crops-hours", "12")
    assert gate.stdout is not None
    first = json.loads(gate.stdout.readline())  # the first traveller was boarded
    assert (first["outcome"], first["subject_id"]) == ("match", MEMBERS[0])
    installed_runner(flight, FACETRUST_ACTOR="agent")("event", "close", EVENT)
    out, err = _finish(gate)
    assert gate.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith(f"error: The event '{EVENT}' was closed on")
    assert "Traceback" not in err

    logged = _gate_events(flight, head)
    decided = [e for e in logged if e.kind == "gate.decision"]
    refused = [e for e in logged if e.kind == "gate.decision.refused"]
    assert len(decided) == 1 + len(out.splitlines())  # every decision printed is audited
    assert refused, "the decision refused when the event closed left no audit event"
    assert [e.kind for e in logged] == ["gate.decision"] * len(decided) + [
        "gate.decision.refused"] * len(refused)  # no decision after the first refusal
    for event in refused:
        _assert_refusal_holds_no_face(event, "EventError")
        assert f"The event '{EVENT}' was closed on" in event.fields["message"]
    with Gallery.find(flight) as gallery:
        assert gallery.store.probe_crops() == []  # closing deleted them; none came after


def _two_people(folder: Path, frames: int) -> Path:
    """A video of a member and, beside them, a blurred face: sharpness about 15, the
    member's about 40."""
    member = cv2.resize(load_image(_photo(MEMBERS[0], 1)), (500, 500))
    blurred = cv2.GaussianBlur(cv2.resize(load_image(_photo("Hu_Jintao", 1)), (500, 500)),
                               (15, 15), 0)
    frame = np.full((720, 1280, 3), 100, np.uint8)
    frame[110:610, 60:560], frame[110:610, 720:1220] = member, blurred
    path = folder / "two.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (1280, 720))
    for _ in range(frames):
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


@pytest.mark.slow  # a gate run from the installed command, models included
def test_a_gate_run_stopped_with_ctrl_c_audits_the_person_it_had_not_decided(
    flight: Path, tmp_path: Path
) -> None:
    """The blurred face is detected from the first frame but never passes the quality
    minimum (sharpness 25 here), so it waits to be decided until it leaves the view;
    Ctrl-C comes first."""
    video = _two_people(tmp_path, 300)
    head = _head(flight)
    gate = _start_gate(flight, video, FACETRUST_MIN_SHARPNESS="25")
    assert gate.stdout is not None
    first = json.loads(gate.stdout.readline())
    assert (first["outcome"], first["subject_id"], first["others_in_frame"]) == (
        "match", MEMBERS[0], 1)
    gate.send_signal(signal.SIGINT)
    _, err = _finish(gate)
    assert gate.returncode != 0 and "Traceback" not in err, err

    logged = _gate_events(flight, head)
    assert [e.kind for e in logged] == ["gate.decision", "gate.decision.refused"], logged
    refused = logged[1]
    _assert_refusal_holds_no_face(refused, "RunStopped")
    assert refused.fields["message"].startswith("The gate run was stopped (interrupted")
    assert refused.fields["others_in_frame"] == 1


@pytest.mark.slow  # a gate run from the installed command, models included
def test_a_source_failing_mid_run_still_decides_the_people_already_seen(
    flight: Path, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(2):  # 0.2 s of a member: within the window for a better frame
        (frames / f"{n:03d}.jpg").write_bytes(_photo(MEMBERS[1], 1).read_bytes())
    (frames / "002.jpg").write_bytes(b"not an image")
    head = _head(flight)
    done = installed_runner(flight, FACETRUST_ACTOR="gate")(
        "gate", "run", "--event", EVENT, "--source", str(frames), code=2)
    assert done.stderr.strip().splitlines()[-1].startswith("error: Frame 002.jpg cannot be read")
    decided = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["outcome"], d["subject_id"]) for d in decided] == [("match", MEMBERS[1])]
    assert [e.kind for e in _gate_events(flight, head)] == ["gate.decision"]


@pytest.mark.slow  # runs the installed command
def test_a_damaged_video_is_one_line_without_ffmpegs_messages(
    flight: Path, tmp_path: Path
) -> None:
    video = tmp_path / "arrivals.mp4"
    write_arrivals_video([_photo(MEMBERS[0], 1)], video)
    truncated, text, half_jpeg = (tmp_path / n for n in ("cut.mp4", "notes.mp4", "half.mp4"))
    truncated.write_bytes(video.read_bytes()[:20_000])  # its index (moov atom) is cut off
    text.write_text("not a video\n")
    half_jpeg.write_bytes(_photo(MEMBERS[0], 1).read_bytes()[:3_000])
    facetrust = installed_runner(flight, FACETRUST_ACTOR="gate")
    for source in (truncated, text):
        done = facetrust("gate", "run", "--event", EVENT, "--source", str(source), code=2)
        assert done.stderr == (f"error: Could not open {str(source)!r}: the file is not a "
                               "readable video. Check the device or file and try again.\n")
    # FFmpeg decodes the start of a cut JPEG (no face in it): nothing to say, nothing said
    done = facetrust("gate", "run", "--event", EVENT, "--source", str(half_jpeg))
    assert (done.stdout, done.stderr) == ("", "")


@pytest.mark.slow  # a gate run from the installed command, models included
def test_people_stepping_up_one_right_after_another_each_get_a_decision(
    flight: Path, tmp_path: Path
) -> None:
    # a queue without a gap: each face takes the place of the one before in the frame
    video = tmp_path / "queue.mp4"
    stranger = LFW / "Serena_Williams" / "Serena_Williams_0001.jpg"
    write_arrivals_video([_photo("George_W_Bush", 1), stranger, _photo("Colin_Powell", 1)],
                         video, gap_seconds=0)
    head = _head(flight)
    done = installed_runner(flight, FACETRUST_ACTOR="gate")(
        "gate", "run", "--event", EVENT, "--source", str(video))
    decided = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["outcome"], d["subject_id"]) for d in decided] == [
        ("match", "George_W_Bush"), ("refer", None), ("match", "Colin_Powell")
    ], done.stderr
    logged = [e for e in _gate_events(flight, head) if e.kind == "gate.decision"]
    assert [e.fields["outcome"] for e in logged] == ["match", "refer", "match"]
