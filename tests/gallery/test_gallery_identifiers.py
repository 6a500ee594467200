"""One grammar for subject ids and one rule for display names, enforced in the library,
so the CLI, the REST service and the console refuse the same input with the same message."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.errors import InvalidParameter
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gallery.checks import TEXT_LIMITS
from facetrust.text import hidden_characters
from gallery_fixtures import BAD_IDS, EVIDENCE_SHA256, GOOD_IDS
from installed_command import INSTALLED, shell_env


@pytest.mark.parametrize("subject_id", BAD_IDS)
def test_ids_outside_the_grammar_are_refused(sample_gallery: Gallery, subject_id: str) -> None:
    with pytest.raises(InvalidParameter, match="letters A-Z and a-z, digits, '.', '_' and '-'"):
        sample_gallery.add_subject(subject_id, actor="registrar")
    assert subject_id not in {s.subject_id for s in sample_gallery.list_subjects()}


@pytest.mark.parametrize("subject_id", GOOD_IDS)
def test_ids_inside_the_grammar_are_kept_as_given(sample_gallery: Gallery, subject_id: str) -> None:
    assert sample_gallery.add_subject(subject_id, actor="registrar").subject_id == subject_id


def test_display_names_are_nfc_without_hidden_characters(sample_gallery: Gallery) -> None:
    named = sample_gallery.add_subject("jose", display_name="  Jose\u0301 M.  ", actor="desk")
    assert named.display_name == "Jos\u00e9 M."
    for hidden in ("Kofi\u202eA", "Kofi\nAnnan", "Kofi\x00", "Kofi\u200b"):
        with pytest.raises(InvalidParameter, match="control or invisible formatting"):
            sample_gallery.add_subject("kofi2", display_name=hidden, actor="desk")
    assert "kofi2" not in {s.subject_id for s in sample_gallery.list_subjects()}


@pytest.mark.slow  # runs the installed command in subprocesses
def test_the_installed_command_refuses_the_same_ids(tmp_path: Path) -> None:
    gallery, _ = Gallery.init_folder(tmp_path)
    gallery.close()
    env, command = shell_env(tmp_path), INSTALLED
    for subject_id in ("a/b", "../x", "evil\u202egpj"):
        done = subprocess.run(
            [command, "subject", "add", subject_id], capture_output=True, text=True,
            env=env, check=False,
        )
        assert done.returncode == 2
        assert "letters A-Z and a-z, digits" in done.stderr and "Traceback" not in done.stderr
    ok = subprocess.run(
        [command, "subject", "add", "kofi", "--name", "Kofi\u202eA"], capture_output=True,
        text=True, env=env, check=False,
    )
    assert ok.returncode == 2 and "U+202E" in ok.stderr
    subprocess.run([command, "subject", "add", "kofi"], env=env, check=True, capture_output=True)
    sneaky = subprocess.run(
        [command, "consent", "grant", "kofi", "--purpose", "boarding", "--days", "30",
         "--evidence-ref", "form-1\x1b[2J", "--evidence-sha256", "ab" * 32,
         "--notice-version", "n1"], capture_output=True, text=True, env=env, check=False,
    )
    assert sneaky.returncode == 2 and "U+001B" in sneaky.stderr and "\x1b" not in sneaky.stderr


#: Text that would not show as recorded: a direction override, a newline, a terminal
#: escape sequence, a line separator, NEL and a zero-width space.
HIDDEN_TEXT = ["CASE-1\u202e7-ESAC", "a\nb", "x\x1b[2J", "a\u2028b", "a\x85b", "z\u200bw"]


@pytest.mark.parametrize("text", HIDDEN_TEXT)
def test_free_text_a_reader_would_not_see_as_recorded_is_refused(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding], text: str,
) -> None:
    gallery = sample_gallery
    subject = sorted(identities)[0]
    probe = embeddings[identities[subject][2]]
    found = gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    attempts: dict[str, Callable[[], object]] = {
        "case_ref": lambda: gallery.identify(
            probe, purpose="boarding", actor="officer", case_ref=text),
        "case_ref of a 1:1": lambda: gallery.verify_subject(
            probe, subject, purpose="boarding", actor="officer", case_ref=text),
        "actor": lambda: gallery.identify(probe, purpose="boarding", actor=f"x{text}",
            case_ref="CASE-1"),
        "note": lambda: gallery.review(
            found.identification_id, subject, reviewer="reviewer-1", note=text),
        "evidence_ref": lambda: consent_with(gallery, subject, evidence_ref=text),
        "notice_version": lambda: consent_with(gallery, subject, notice_version=text),
        "reason of a withdrawal": lambda: gallery.withdraw_consent(
            subject, None, actor="desk", reason=text),
        "reason of an erasure": lambda: gallery.forget(subject, actor="desk", reason=text),
    }
    for what, attempt in attempts.items():
        with pytest.raises(InvalidParameter, match="control or invisible formatting") as refused:
            attempt()
        assert "U+" in str(refused.value), what
        assert text not in str(refused.value), what  # the message never echoes it
    assert gallery.review_case(found.identification_id, reviewer="reviewer-1").status == "pending"
    assert [c.withdrawn_at for c in gallery.consents(subject)] == [None]
    assert gallery.get_subject(subject).template_count == 2


def consent_with(gallery: Gallery, subject_id: str, **fields: str) -> object:
    return gallery.grant_consent(
        subject_id, ["boarding"], expires_at=gallery.now() + timedelta(days=30),
        evidence_sha256=EVIDENCE_SHA256, actor="desk",
        **{"evidence_ref": "form-1", "notice_version": "n1", **fields},
    )


def test_the_audit_export_shows_every_recorded_character_on_one_line(
    sample_gallery: Gallery,
) -> None:
    # The service audits a refused request with the fields it was sent (the
    # purpose and case reference of a request refused before the gallery saw
    # them): text recorded as given, so its export must still be safe to read.
    for text in HIDDEN_TEXT:
        sample_gallery.audit.append("service.refused", actor="anonymous", purpose=text,
                                    subject_ids=[], case_ref=text, status=401)
    buffer = io.StringIO()
    count = sample_gallery.audit.export(buffer)
    exported = buffer.getvalue()
    assert len(exported.splitlines()) == count  # str.splitlines breaks at U+2028, NEL, ...
    assert hidden_characters(exported.replace("\n", "")) == []
    events = [json.loads(line) for line in exported.splitlines()]
    assert [e["case_ref"] for e in events if e["kind"] == "service.refused"] == HIDDEN_TEXT
    assert sample_gallery.audit.verify().ok


def test_free_text_is_as_long_as_every_entry_point_allows_and_no_longer(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    gallery = sample_gallery
    subject = sorted(identities)[0]
    probe = embeddings[identities[subject][2]]
    found = gallery.identify(probe, purpose="boarding", actor="officer",
                             case_ref="c" * TEXT_LIMITS["case_ref"])
    too_long: dict[str, Callable[[], object]] = {
        "case_ref": lambda: gallery.identify(
            probe, purpose="boarding", actor="officer",
            case_ref="c" * (TEXT_LIMITS["case_ref"] + 1)),
        "note": lambda: gallery.review(found.identification_id, subject, reviewer="reviewer-1",
                                       note="n" * (TEXT_LIMITS["note"] + 1)),
        "reason": lambda: gallery.withdraw_consent(
            subject, None, actor="desk", reason="r" * (TEXT_LIMITS["reason"] + 1)),
        "evidence_ref": lambda: consent_with(
            gallery, subject, evidence_ref="e" * (TEXT_LIMITS["evidence_ref"] + 1)),
        "actor": lambda: gallery.identify(probe, purpose="boarding", actor="a" * 201,
            case_ref="CASE-1"),
    }
    for what, attempt in too_long.items():
        with pytest.raises(InvalidParameter, match=f"'{what}' is at most"):
            attempt()
    assert [c.withdrawn_at for c in gallery.consents(subject)] == [None]
