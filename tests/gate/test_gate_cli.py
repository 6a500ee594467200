"""The gate from the installed command: an opt-out always reaches the person it names,
crop retention means what it says, and bad windows are one-line refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.errors import UnknownSubject
from facetrust.gallery import Gallery
from facetrust.gate import events
from installed_command import installed_runner, kill_when_paused

EVENT = "flight-UA123"
SAMPLE = Path(__file__).parent.parent / "data" / "lfw" / "Kofi_Annan"
TRAVELLER = Path(__file__).parent.parent / "data" / "lfw" / "Vicente_Fox" / "Vicente_Fox_0001.jpg"

Facetrust = Callable[..., subprocess.CompletedProcess[str]]


def _command(folder: Path) -> Facetrust:
    """Run the installed command on the gallery in ``folder``, as agent."""
    return installed_runner(folder, FACETRUST_ACTOR="agent")


@pytest.fixture
def flight(tmp_path: Path, grant: Callable[..., str]) -> Path:
    """A gallery folder with an open event whose one member is 'kofi' (consented, not
    enrolled)."""
    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        gallery.add_subject("kofi", actor="registrar")
        grant(gallery, "kofi", ("boarding",))
        now = gallery.now()
        events.open_event(gallery, EVENT, purpose="boarding", actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=3))
        events.add_member(gallery, EVENT, "kofi", actor="agent")
    return tmp_path


@pytest.mark.slow  # runs the installed command in subprocesses
def test_an_opt_out_naming_no_member_is_refused_and_a_members_removes_them(
    flight: Path,
) -> None:
    facetrust = _command(flight)
    for subject, message in [
        ("kofy", "Subject 'kofy' is not a member of the event 'flight-UA123'"),  # a typo
        ("kofi\u202e", "A subject id is 1 to 64 characters"),  # right-to-left override
    ]:
        refused = facetrust("event", "opt-out", EVENT, "seat 1A", "--subject", subject, code=2)
        assert refused.stderr.startswith("error: ") and message in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "\u202e" not in refused.stderr  # shown escaped, never raw
    shown = json.loads(facetrust("event", "show", EVENT).stdout)
    assert (shown["members"], shown["opt_outs"]) == (1, 0)  # still in the gallery
    with Gallery.find(flight) as gallery:
        logged = [e for e in gallery.audit.events() if e.kind.startswith("event.opt-out")]
        assert logged == []
        assert not any("\u202e" in repr(e) for e in gallery.audit.events())

    facetrust("event", "opt-out", EVENT, "seat 1A", "--subject", "kofi")
    shown = json.loads(facetrust("event", "show", EVENT).stdout)
    assert (shown["members"], shown["opt_outs"]) == (0, 1)
    facetrust("event", "opt-out", EVENT, "seat 2B")  # a reference alone: still recorded
    assert json.loads(facetrust("event", "show", EVENT).stdout)["opt_outs"] == 2
    with Gallery.find(flight) as gallery:
        (opted,) = [e for e in gallery.audit.events() if e.subject_ids == ("kofi",)
                    and e.kind == "event.opt-out"]
        assert opted.fields["reference"] == "seat 1A" and gallery.audit.verify().ok


@pytest.mark.slow  # runs the installed command in subprocesses
def test_event_windows_out_of_range_are_one_line_refusals(flight: Path) -> None:
    facetrust = _command(flight)
    for window, message in [
        (["--from", "2026-01-01", "--hours", "nan"], "'hours' of an event must be a number"),
        (["--from", "9999-12-31", "--hours", "48"], "would end after the year 9999"),
        (["--from", "9999-12-31T20:00-05:00", "--to", "9999-12-31T22:00-05:00"],
         "outside the years 1 to 9999 in UTC"),
    ]:
        refused = facetrust("event", "open", "late", "--purpose", "boarding", *window, code=2)
        assert refused.stderr.startswith("error: ") and message in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    for hours in ("inf", "1e300", "0", "-3", "169"):
        refused = facetrust("event", "open", "late", "--purpose", "boarding", "--from",
                            "2026-01-01", "--hours", hours, code=2)
        assert "Invalid value for '--hours'" in refused.stderr
    assert "No event 'late'" in facetrust("event", "show", "late", code=2).stderr


@pytest.mark.slow  # a gate run from the installed command, models included
def test_a_gate_run_keeps_crops_only_for_a_positive_number_of_hours(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    facetrust("enroll", "kofi", str(SAMPLE / "Kofi_Annan_0001.jpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(SAMPLE / "Kofi_Annan_0002.jpg", frames)
    gate = ("gate", "run", "--event", EVENT, "--source", str(frames))

    def crops() -> int:
        with Gallery.find(flight) as gallery:
            return len(gallery.store.probe_crops())

    for option in ([], ["--keep-crops-hours", "0"]):
        decided = json.loads(facetrust(*gate, *option).stdout)
        assert (decided["outcome"], decided["subject_id"]) == ("match", "kofi")
        assert crops() == 0
    for option, message in [
        (["--keep-crops-hours", "nan"], "error: The 'keep_crop_hours' of a gate must be"),
        (["--window", "nan"], "error: The 'window_s' of a gate"),
        (["--keep-crops-hours", "-1"], "Invalid value for '--keep-crops-hours'"),
        (["--keep-crops-hours", "1e12"], "Invalid value for '--keep-crops-hours'"),
        (["--window", "-0.5"], "Invalid value for '--window'"),
    ]:
        assert message in facetrust(*gate, *option, code=2).stderr
    assert crops() == 0
    facetrust(*gate, "--keep-crops-hours", "12")
    assert crops() == 1


def _one_line_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _open_event(folder: Path, event_id: str, start: timedelta, hours: float = 3) -> None:
    with Gallery.find(folder) as gallery:
        now = gallery.now()
        events.open_event(gallery, event_id, purpose="boarding", actor="agent",
                          valid_from=now + start, valid_to=now + start + timedelta(hours=hours))


@pytest.mark.slow  # runs the installed command in subprocesses
def test_an_opt_out_reference_is_recorded_once_and_its_person_stays_out(flight: Path) -> None:
    facetrust = _command(flight)
    facetrust("event", "opt-out", EVENT, "seat 14C", "--subject", "kofi")
    # the desk records it twice: refused, the first opt-out and its subject kept
    _one_line_error(facetrust("event", "opt-out", EVENT, "seat 14C", code=2),
                    "The reference 'seat 14C' already records an opt-out of 'flight-UA123'")
    _one_line_error(facetrust("event", "add", EVENT, "kofi", code=2), "opted out")
    shown = json.loads(facetrust("event", "show", EVENT).stdout)
    assert (shown["members"], shown["opt_outs"]) == (0, 1)
    with Gallery.find(flight) as gallery:
        assert [(o.reference, o.subject_id) for o in gallery.store.opt_outs(EVENT)] == [
            ("seat 14C", "kofi")
        ]


@pytest.mark.slow  # runs the installed command, models included
def test_an_event_only_traveller_stays_event_only_and_in_their_event(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    form = tmp_path / "form.pdf"
    form.write_bytes(b"signed form")
    traveller = json.loads(facetrust(
        "event", "enroll", EVENT, str(TRAVELLER), "--evidence-ref", "k1", "--evidence-file",
        str(form), "--notice-version", "1",
    ).stdout)["subject_id"]
    # a list of members loaded again: the traveller stays a member for this event only
    assert json.loads(facetrust("event", "add", EVENT, "kofi", traveller).stdout)["members"] == 2
    with Gallery.find(flight) as gallery:
        assert {m.subject_id: m.event_only for m in gallery.store.event_members(EVENT)} == {
            "kofi": False, traveller: True
        }
    _open_event(flight, "flight-LH400", -timedelta(minutes=1))
    _one_line_error(facetrust("event", "add", "flight-LH400", traveller, code=2),
                    f"Subject {traveller!r} was enrolled for the event 'flight-UA123' only")
    assert json.loads(facetrust("event", "show", "flight-LH400").stdout)["members"] == 0
    closed = json.loads(facetrust("event", "close", EVENT).stdout)
    assert closed["subjects_erased"] == [traveller]
    with Gallery.find(flight) as gallery:
        assert gallery.store.templates_of(traveller) == []
        with pytest.raises(UnknownSubject):
            gallery.get_subject(traveller)


@pytest.mark.slow  # runs the installed command in subprocesses
def test_a_gate_run_checks_the_event_before_reading_a_frame(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    _open_event(flight, "ended", -timedelta(hours=5))
    _open_event(flight, "later", timedelta(hours=5))
    _open_event(flight, "closed", -timedelta(minutes=1))
    facetrust("event", "close", "closed")
    missing = str(tmp_path / "no-such-video.mp4")  # reading it would fail: "No video file"
    for event_id, message in [
        ("nosuch", "No event 'nosuch'"),
        ("closed", "The event 'closed' was closed"),
        ("ended", "The event 'ended' runs from"),
        ("later", "The event 'later' runs from"),
    ]:
        refused = facetrust("gate", "run", "--event", event_id, "--source", missing, code=2)
        _one_line_error(refused, message)
        assert refused.stdout == ""


@pytest.mark.slow  # runs the installed command in subprocesses
def test_manual_passages_and_gate_ids_are_shown_as_they_are(flight: Path, tmp_path: Path) -> None:
    facetrust = _command(flight)
    with Gallery.find(flight) as gallery:
        head = gallery.audit.head().seq
    for option, message in [
        (["--reference", ""], "The 'reference' must name"),
        (["--reference", "x" * 100_000], "The 'reference' is at most 200 characters"),
        (["--reference", "seat 1A", "--gate-id", "B12\nforged line"],
         "The 'gate_id' may not hold control"),
    ]:
        _one_line_error(facetrust("gate", "manual", "--event", EVENT, *option, code=2), message)
    with Gallery.find(flight) as gallery:
        assert gallery.audit.head().seq == head  # no face captured: nothing to audit
    _one_line_error(facetrust("gate", "run", "--event", EVENT, "--source", str(tmp_path),
                              "--gate-id", "B12\nforged line", code=2),
                    "The 'gate_id' may not hold control")
    with Gallery.find(flight) as gallery:  # a refused gate run is audited, the id escaped
        (refused,) = gallery.audit.events(after_seq=head)
        assert refused.kind == "gate.run.refused" and refused.fields["error"] == "InvalidParameter"
        assert gallery.audit.verify().ok


@pytest.mark.slow  # runs the installed command in subprocesses
def test_camera_indexes_out_of_range_are_one_line_refusals(flight: Path) -> None:
    facetrust = _command(flight)
    for source in ("2147483648", "9223372036854775807", "99999999999999999999", "256"):
        refused = facetrust("gate", "run", "--event", EVENT, "--source", source, code=2)
        _one_line_error(refused, "A camera index is a whole number from 0 to 255")
    # a camera that is not there: OpenCV's own warnings are silenced
    _one_line_error(facetrust("gate", "run", "--event", EVENT, "--source", "99", code=2),
                    "Could not open camera 99")


@pytest.mark.slow  # runs the installed command, models included
def test_an_event_enrolment_refused_for_its_photo_is_audited(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    form = tmp_path / "form.pdf"
    form.write_bytes(b"signed form")
    with Gallery.find(flight) as gallery:
        head = gallery.audit.head().seq
    cat = Path(__file__).parent.parent / "data" / "non_faces" / "chelsea_cat.jpg"
    refused = facetrust("event", "enroll", EVENT, str(cat), "--evidence-ref", "k1",
                        "--evidence-file", str(form), "--notice-version", "1", code=2)
    _one_line_error(refused, "No face was found in the image")
    with Gallery.find(flight) as gallery:
        (logged,) = [e for e in gallery.audit.events() if e.seq > head]
        assert logged.kind == "event.enroll.refused" and logged.purpose == "boarding"
        assert (logged.actor, logged.subject_ids) == ("agent", ())
        assert logged.fields["event_id"] == EVENT
        assert "No face was found" in logged.fields["message"]
        assert [m.subject_id for m in gallery.store.event_members(EVENT)] == ["kofi"]


@pytest.mark.slow  # a gate run from the installed command, models included
def test_a_traveller_who_opts_out_before_joining_the_event_is_never_added_or_matched(
    flight: Path, tmp_path: Path, grant: Callable[..., str]
) -> None:
    facetrust = _command(flight)
    with Gallery.find(flight) as gallery:  # enrolled for boarding, not yet on the flight
        gallery.add_subject("vicente", actor="registrar")
        grant(gallery, "vicente", ("boarding",))
    facetrust("enroll", "vicente", str(TRAVELLER))
    # opts out at booking, before the passenger list is loaded into the event
    facetrust("event", "opt-out", EVENT, "booking Q7X", "--subject", "vicente")
    _one_line_error(facetrust("event", "add", EVENT, "kofi", "vicente", code=2),
                    "Subject 'vicente' opted out of 'flight-UA123'")
    shown = json.loads(facetrust("event", "show", EVENT).stdout)
    assert (shown["members"], shown["opt_outs"]) == (1, 1)
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(TRAVELLER.with_name("Vicente_Fox_0003.jpg"), frames)
    decided = json.loads(facetrust("gate", "run", "--event", EVENT, "--source",
                                   str(frames)).stdout)
    assert (decided["outcome"], decided["subject_id"]) == ("refer", None)
    # a typo still names nobody: refused, nothing recorded
    _one_line_error(facetrust("event", "opt-out", EVENT, "seat 3C", "--subject", "vicent",
                              code=2), "Subject 'vicent' is not a member of the event")
    with Gallery.find(flight) as gallery:
        assert [(o.reference, o.subject_id) for o in gallery.store.opt_outs(EVENT)] == [
            ("booking Q7X", "vicente")
        ]
        assert gallery.audit.verify().ok


@pytest.mark.slow  # runs the installed command, models included
def test_a_traveller_enrolled_for_an_event_only_is_found_or_verified_by_its_gate_only(
    flight: Path, tmp_path: Path, grant: Callable[..., str]
) -> None:
    facetrust = _command(flight)
    form = tmp_path / "form.pdf"
    form.write_bytes(b"signed form")
    traveller = json.loads(facetrust(
        "event", "enroll", EVENT, str(TRAVELLER), "--evidence-ref", "k1", "--evidence-file",
        str(form), "--notice-version", "1",
    ).stdout)["subject_id"]
    probe = str(TRAVELLER.with_name("Vicente_Fox_0003.jpg"))
    # a gallery-wide search for the event's purpose, outside the event: not a candidate
    searched = facetrust("identify", probe, "--purpose", "boarding", "--case-ref", "c1", code=1)
    assert traveller not in searched.stdout
    assert json.loads(searched.stdout)["subjects_searched"] == 0
    # nor verified 1:1 by anyone who knows the id, for the event's purpose too: audited
    refused = facetrust("verify", probe, "--subject", traveller, "--purpose", "boarding",
                        "--case-ref", "c2", code=2)
    _one_line_error(refused, f"Subject {traveller!r} was enrolled for the event "
                             f"'{EVENT}' only")
    assert "only its gate matches them" in refused.stderr and refused.stdout == ""
    with Gallery.find(flight) as gallery:
        (logged,) = gallery.audit.events(kind="verify.refused")
        assert (logged.subject_ids, logged.purpose) == ((traveller,), "boarding")
        assert logged.fields["error"] == "EventOnlySubject"
        assert logged.fields["case_ref"] == "c2"
        assert list(gallery.audit.events(kind="verify")) == []
    # enrolling the same person as an ordinary subject does not find them either
    with Gallery.find(flight) as gallery:
        gallery.add_subject("vicente", actor="registrar")
        grant(gallery, "vicente", ("boarding",))
    enrolled = facetrust("enroll", "vicente", probe)
    assert traveller not in enrolled.stdout + enrolled.stderr
    # the event's own gate still boards them
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(TRAVELLER.with_name("Vicente_Fox_0004.jpg"), frames)
    with Gallery.find(flight) as gallery:
        gallery.forget("vicente", actor="registrar", reason="test: one of them only")
    decided = json.loads(facetrust("gate", "run", "--event", EVENT, "--source",
                                   str(frames)).stdout)
    assert (decided["outcome"], decided["subject_id"]) == ("match", traveller)


#: Records an opt-out of the event-only traveller, stopping (to be killed) when it first
#: erases them.
OPTING_OUT = r"""
import pathlib, sys, time
from facetrust.gallery import Gallery
from facetrust.gate import events

folder, flag, event_id, subject_id, reference = sys.argv[1:6]
gallery = Gallery.find(folder)
forget = gallery.forget

def stop_then_forget(*args, **kwargs):
    pathlib.Path(flag).write_text("forget")
    time.sleep(120)

gallery.forget = stop_then_forget
events.opt_out(gallery, event_id, reference, actor="agent", subject_id=subject_id)
"""


@pytest.mark.slow  # a real subprocess killed mid-opt-out, then the installed command
def test_an_event_only_opt_out_killed_half_way_still_erases_the_traveller_at_close(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    form = tmp_path / "form.pdf"
    form.write_bytes(b"signed form")
    travellers = [json.loads(facetrust(
        "event", "enroll", EVENT, str(photo), "--evidence-ref", "k1", "--evidence-file",
        str(form), "--notice-version", "1",
    ).stdout)["subject_id"] for photo in (TRAVELLER, SAMPLE / "Kofi_Annan_0003.jpg")]
    for n, traveller in enumerate(travellers):
        kill_when_paused(OPTING_OUT, [str(flight), EVENT, traveller, f"seat 7{'AB'[n]}"],
                         tmp_path / f"paused{n}")
    # the desk records the first opt-out again: it is recorded, the traveller erased
    facetrust("event", "opt-out", EVENT, "seat 7A", "--subject", travellers[0])
    with Gallery.find(flight) as gallery:
        assert [o.subject_id for o in gallery.store.opt_outs(EVENT)] == [travellers[0]]
        assert list(gallery.audit.events(kind="erase.refused")) == []
    # the event is closed without the second: the traveller is erased all the same
    assert json.loads(facetrust("event", "close", EVENT).stdout)["subjects_erased"] == [
        travellers[1]
    ]
    with Gallery.find(flight) as gallery:
        for traveller in travellers:
            assert gallery.store.templates_of(traveller) == []
            with pytest.raises(UnknownSubject):
                gallery.get_subject(traveller)
        assert gallery.audit.verify().ok


@pytest.mark.slow  # gate runs from the installed command, models included
def test_a_member_who_opts_out_after_a_match_keeps_no_crop_of_the_event(
    flight: Path, tmp_path: Path
) -> None:
    facetrust = _command(flight)
    facetrust("enroll", "kofi", str(SAMPLE / "Kofi_Annan_0001.jpg"))
    _open_event(flight, "flight-LH400", -timedelta(minutes=1))
    facetrust("event", "add", "flight-LH400", "kofi")
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(SAMPLE / "Kofi_Annan_0002.jpg", frames)
    for event_id in (EVENT, "flight-LH400"):  # matched at both gates, a crop kept at each
        decided = json.loads(facetrust("gate", "run", "--event", event_id, "--source",
                                       str(frames), "--keep-crops-hours", "12").stdout)
        assert (decided["outcome"], decided["subject_id"]) == ("match", "kofi")
    with Gallery.find(flight) as gallery:
        (kept,) = gallery.store.probe_crops(EVENT)
        assert len(gallery.store.probe_crops("flight-LH400")) == 1
    # the opt-out withdraws the face crop of this event at once, not at the sweep
    facetrust("event", "opt-out", EVENT, "seat 1A", "--subject", "kofi")
    with Gallery.find(flight) as gallery:
        assert gallery.store.probe_crops(EVENT) == []
        assert len(gallery.store.probe_crops("flight-LH400")) == 1  # another event's
        (opted,) = gallery.audit.events(kind="event.opt-out")
        assert opted.subject_ids == ("kofi",)
        assert opted.fields["probe_crops_deleted"] == 1
        assert opted.fields["probe_crop_ids"] == [kept.crop_id]
        assert gallery.audit.verify().ok


@pytest.mark.slow  # runs the installed command in subprocesses
def test_an_event_naming_a_point_its_gallerys_model_lacks_is_refused_at_open(
    flight: Path,
) -> None:
    # the gallery's pipeline averages each face with its mirror image: its own model id
    facetrust = installed_runner(flight, FACETRUST_ACTOR="agent",
                                 FACETRUST_AUGMENTATION="mirror")
    window = ("--purpose", "boarding", "--from", "2026-01-01", "--hours", "3")
    for point in ("fmr-1e-3-fair", "dlib-default"):  # calibrated for the plain model only
        _one_line_error(
            facetrust("event", "open", "mirrored", *window, "--operating-point", point,
                      code=2),
            f"Operating point {point!r} was calibrated for model 'dlib-resnet-v1', not "
            "'dlib-resnet-v1+mirror'",
        )
    assert "No event 'mirrored'" in facetrust("event", "show", "mirrored", code=2).stderr
    opened = json.loads(facetrust("event", "open", "mirrored", *window,
                                  "--operating-point", "fmr-1e-4").stdout)
    assert opened["operating_point"] == "fmr-1e-4"
