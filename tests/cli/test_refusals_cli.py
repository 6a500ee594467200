"""What the installed command refuses: options the chosen mode would ignore, dates past
the year 9999, malformed gallery configs. Each is one line (or a usage error), exit 2,
never a traceback, and changes nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from facetrust.gallery import Gallery
from installed_command import installed_runner

KOFI = Path(__file__).parent.parent / "data" / "lfw" / "Kofi_Annan"
EVIDENCE = ("--evidence-ref", "FORM-1", "--evidence-sha256", "ab" * 32, "--notice-version", "v1")

Facetrust = Callable[..., subprocess.CompletedProcess[str]]


def _command(folder: Path, **settings: str) -> Facetrust:
    return installed_runner(folder, **settings)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    return done.stderr


@pytest.fixture
def gallery_folder(tmp_path: Path, grant: Callable[..., str]) -> Path:
    """A gallery folder with 'kofi' enrolled for boarding (from his first photo)."""
    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        gallery.add_subject("kofi", actor="registrar")
        grant(gallery, "kofi", ("boarding",))
    _command(tmp_path, FACETRUST_ACTOR="registrar")("enroll", "kofi",
                                                     str(KOFI / "Kofi_Annan_0001.jpg"))
    return tmp_path


@pytest.mark.slow  # runs the installed command in subprocesses
def test_verify_refuses_the_options_of_the_other_mode(gallery_folder: Path) -> None:
    facetrust = _command(gallery_folder)
    photo, other = str(KOFI / "Kofi_Annan_0002.jpg"), str(KOFI / "Kofi_Annan_0003.jpg")
    with_subject = ("verify", photo, "--subject", "kofi", "--purpose", "boarding",
                    "--case-ref", "D1")
    with Gallery.find(gallery_folder) as gallery:
        head = gallery.audit.head().seq
    for option, name in [
        (["--operating-point", "fmr-1e-4"], "--operating-point"),
        (["-p", "no-such-point"], "--operating-point"),
        (["--no-quality-check"], "--no-quality-check"),
        (["--detector", "hog"], "--detector"),
        (["--detection-max-side", "800"], "--detection-max-side"),
    ]:
        refused = facetrust(*with_subject, *option, code=2).stderr
        assert f"{name} applies to comparing two photos, not to verify --subject" in refused
    # (--gallery applies to both: two photos are decided at its operating point)
    for option in (["--purpose", "boarding"], ["--case-ref", "D1"], ["--actor", "desk"]):
        refused = facetrust("verify", photo, other, *option, code=2).stderr
        assert f"{option[0]} applies to verify --subject only" in refused
    with Gallery.find(gallery_folder) as gallery:
        assert gallery.audit.head().seq == head  # refused before the gallery was asked

    verified = json.loads(facetrust(*with_subject, "--json", "--face", "single").stdout)
    assert verified["match"] is True and verified["subject_id"] == "kofi"
    # Settings from the environment belong to no mode in particular: not refused.
    set_up = _command(gallery_folder, FACETRUST_ACTOR="desk")
    assert set_up("verify", photo, other).stdout.startswith("MATCH")


@pytest.mark.slow  # runs the installed command in subprocesses
def test_consent_dates_past_the_year_9999_are_refused(gallery_folder: Path) -> None:
    facetrust = _command(gallery_folder, FACETRUST_ACTOR="registrar")
    grant = ("consent", "grant", "kofi", "--purpose", "boarding", *EVIDENCE)
    for until, message in [
        (["--days", "99999999"], "A consent lasting 99999999 days from"),
        (["--days", "9999999999"], "would expire after the year 9999"),
        (["--expires", "9999-12-31T23:59:59-05:00"], "The 'expires_at' 9999-12-31T23:59:59-05:00 "
         "falls outside the years 1 to 9999 in UTC"),
    ]:
        assert message in _one_line_error(facetrust(*grant, *until, code=2))
    assert "Invalid value for '--days'" in facetrust(*grant, "--days", "0", code=2).stderr
    consents = json.loads(facetrust("consent", "show", "kofi").stdout)
    assert len(consents) == 1  # only the fixture's
    assert json.loads(facetrust(*grant, "--days", "30").stdout)["status"] == "active"


@pytest.mark.slow  # runs the installed command in subprocesses
def test_an_unreadable_consent_expiry_is_named_as_the_expires_option(
    gallery_folder: Path,
) -> None:
    facetrust = _command(gallery_folder, FACETRUST_ACTOR="registrar")
    grant = ("consent", "grant", "kofi", "--purpose", "boarding", *EVIDENCE)
    # an empty --expires was taken for a missing one and refused as "'days' ... Got 0"
    for text in ("", "2031-02-30", "2031-12-31T23:59:60"):
        refused = _one_line_error(facetrust(*grant, "--expires", text, code=2))
        assert "The 'expires' must be an ISO 8601 date or time" in refused
        assert f"Got {text!r}." in refused
    assert len(json.loads(facetrust("consent", "show", "kofi").stdout)) == 1  # the fixture's


@pytest.mark.slow  # runs the installed command in subprocesses
@pytest.mark.parametrize(("args", "name"), [
    (["event", "open", "gate-7", "--purpose", "boarding", "--from", "2031-02-30",
      "--hours", "2"], "from"),
    (["event", "open", "gate-7", "--purpose", "boarding", "--from", "2031-01-30",
      "--to", "2031-01-30T25:00"], "to"),
    (["audit", "export", "--since", "yesterday"], "since"),
    (["audit", "export", "--until", "2031-12-31T23:59:60"], "until"),
])
def test_an_unreadable_time_is_named_by_its_option(
    gallery_folder: Path, args: list[str], name: str
) -> None:
    refused = _one_line_error(_command(gallery_folder)(*args, code=2))
    assert refused.startswith(f"error: The '{name}' must be an ISO 8601 date or time")


@pytest.mark.slow  # runs the installed command in subprocesses
def test_a_retention_period_past_what_a_date_can_hold_is_refused_at_init(
    tmp_path: Path,
) -> None:
    # 99999999 days was written to the config; then every `subject add` crashed
    # with an OverflowError traceback (and a search would too, from 740000 days)
    facetrust = _command(tmp_path / "g")
    refused = _one_line_error(
        facetrust("init", str(tmp_path / "g"), "--retention-days", "99999999", code=2))
    assert "'retention_days' setting must be at most 36500 (100 years)" in refused
    assert not (tmp_path / "g" / "facetrust-gallery.json").exists()
    facetrust("init", str(tmp_path / "g"), "--retention-days", "36500")
    assert json.loads(facetrust("subject", "add", "kofi").stdout)["retention_until"]


@pytest.mark.slow  # runs the installed command in subprocesses
@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must hold one JSON object of settings"),
    ('{"purposes": 5}', "The 'purposes' setting of the gallery config"),
    ('{"purposes": "boarding"}', "The 'purposes' setting of the gallery config"),
    ('{"purposes": ["boarding", 7]}', "The 'purposes' setting of the gallery config"),
    ('{"db_path": 3}', "The 'db_path' setting of the gallery config"),
    ('{"server_side_search": "no"}', "The 'server_side_search' setting"),
    ('{"review_quorum": 0}', "'review_quorum' setting must be a whole number"),
    ('{"retention_days": 99999999}', "'retention_days' setting must be at most 36500"),
])
def test_a_malformed_gallery_config_is_a_one_line_error(
    tmp_path: Path, text: str, message: str
) -> None:
    gallery, config_path = Gallery.init_folder(tmp_path)
    gallery.close()
    settings = json.loads(config_path.read_text())
    edit = json.loads(text)
    config_path.write_text(json.dumps({**settings, **edit} if isinstance(edit, dict) else edit))
    refused = _one_line_error(_command(tmp_path)("subject", "list", code=2))
    assert message in refused and str(config_path) in refused
