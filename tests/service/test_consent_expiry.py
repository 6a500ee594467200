"""One consent expiry, typed at every entry point, is one instant.

The same text given to the installed CLI (in time zones other than UTC), the
REST API and the console's consent form is stored as the same UTC instant, or
refused; never read as local time in one place and UTC in another, never as
Unix seconds, never with its time or zone dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from facetrust.gallery import Gallery
from installed_command import installed_runner

from .conftest import EVIDENCE_SHA256, LiveServer
from .test_console_edges import csrf_of, logged_in
from .test_service_trust import actor, audit_events

pytestmark = pytest.mark.service

CONSENT = {"purposes": ["access-control"], "evidence_ref": "form-expiry",
           "evidence_sha256": EVIDENCE_SHA256, "notice_version": "2026-01"}
#: text typed -> the instant stored (UTC), or None where the REST API refuses it
#: (a date or a time without a zone: the API wants the zone said).
EXPIRIES = [
    ("2031-01-31", "2031-01-31T00:00:00+00:00", False),
    ("2031-01-31T09:30", "2031-01-31T09:30:00+00:00", False),
    ("2031-01-31T09:30Z", "2031-01-31T09:30:00+00:00", True),
    ("2031-01-31T09:30+02:00", "2031-01-31T07:30:00+00:00", True),
]


def _cli_expiry(folder: Path, text: str, zone: str) -> str:
    facetrust = installed_runner(folder, FACETRUST_ACTOR="registrar", TZ=zone)
    subject = f"cli-{_id(zone)}"
    facetrust("subject", "add", subject)
    granted = facetrust("consent", "grant", subject, "--purpose", "access-control",
                        "--expires", text, "--evidence-ref", "form-expiry",
                        "--evidence-sha256", EVIDENCE_SHA256, "--notice-version", "2026-01")
    return str(json.loads(granted.stdout)["expires_at"])


def _id(text: object) -> str:
    """``text`` as a part of a subject id."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()


def _console_grant(server: LiveServer, subject: str, text: str) -> tuple[int, str]:
    with logged_in(server, "enroller") as browser:
        answer = browser.post("/console/consent", data={
            "csrf": csrf_of(browser, "/console/consent"), "subject_id": subject,
            "evidence_ref": "form-expiry", "notice_version": "2026-01", "expires_on": text,
            "purposes": "access-control", "evidence_sha256": EVIDENCE_SHA256,
        })
    return answer.status_code, answer.text


def _stored_expiry(server: LiveServer, subject: str) -> str:
    with server.client("enroller") as client:
        consents = client.get(f"/v1/subjects/{subject}/consents").json()["consents"]
    assert len(consents) == 1, consents
    return str(consents[0]["expires_at"])


@pytest.mark.slow  # runs the installed command in subprocesses
@pytest.mark.parametrize(("text", "instant", "zoned"), EXPIRIES)
def test_one_expiry_text_is_one_instant_at_the_cli_the_api_and_the_console(
    live_server: LiveServer, tmp_path: Path, text: str, instant: str, zoned: bool
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path / "cli")
    gallery.close()
    for zone in ("America/Los_Angeles", "Asia/Kolkata"):  # never read as the shell's time
        assert _cli_expiry(tmp_path / "cli", text, zone) == instant

    subject = f"expiry-console-{_id(text)}"
    status, page = _console_grant(live_server, subject, text)
    assert status == 200, page[-2000:]
    assert _stored_expiry(live_server, subject) == instant  # not 23:59:59, time and zone kept
    assert f"until {instant}" in page
    with logged_in(live_server, "enroller") as browser:
        shown = browser.get(f"/console/subjects/{subject}").text
    # the subject page shows the expiry to the second, in UTC: not a bare date that
    # reads as 00:00 (or as the end of the day) whatever the time stored
    assert f"{instant[:19].replace('T', ' ')} UTC" in shown

    with live_server.client("enroller") as client:
        rest = f"expiry-rest-{_id(text)}"
        assert client.post("/v1/subjects", json={"subject_id": rest}).status_code == 201
        answer = client.post(f"/v1/subjects/{rest}/consents",
                             json={**CONSENT, "expires_at": text})
    if zoned:
        assert answer.status_code == 201, answer.text
        assert answer.json()["expires_at"] == instant
    else:
        assert answer.status_code == 422, answer.text
        assert "must say its time zone" in answer.text


@pytest.mark.parametrize("number", [1900000000, "1900000000", 1900000000000, "20310131"])
def test_the_api_reads_no_number_as_an_expiry(live_server: LiveServer, number: object) -> None:
    # pydantic alone reads 1900000000 as Unix seconds (2030-03-17) and 1900000000000 as
    # milliseconds; the CLI reads 20310131 as 31 January 2031: none may differ
    subject = f"expiry-number-{_id(number)}-{type(number).__name__}"
    with live_server.client("enroller") as client:
        assert client.post("/v1/subjects", json={"subject_id": subject}).status_code == 201
        answer = client.post(f"/v1/subjects/{subject}/consents",
                             json={**CONSENT, "expires_at": number})
        as_form = client.post(
            f"/v1/subjects/{subject}/consents",
            data={"purposes": "access-control", "expires_at": str(number),
                  "evidence_ref": "form-expiry", "notice_version": "2026-01"},
            files={"evidence": ("form.pdf", b"%PDF signed")},
        )
        consents = client.get(f"/v1/subjects/{subject}/consents").json()["consents"]
    for refused in (answer, as_form):
        assert refused.status_code == 422, refused.text
        assert "expires_at" in refused.text
    assert consents == []


@pytest.mark.parametrize("text", ["2031-02-30", "2031-12-31T23:59:60", "next tuesday"])
def test_the_console_names_an_unreadable_expiry_and_records_nothing(
    live_server: LiveServer, text: str
) -> None:
    subject = f"expiry-bad-{_id(text)}"
    status, page = _console_grant(live_server, subject, text)
    assert status == 422, page[-2000:]
    assert text in page  # the text typed, not an expiry the console made up
    assert "must be a time in the future" not in page
    with live_server.client("enroller") as client:
        assert client.get(f"/v1/subjects/{subject}/consents").status_code == 404  # not added
    kinds = {e["kind"] for e in audit_events(live_server, subject=subject)
             if e["actor"] == actor(live_server, "enroller")}
    assert not kinds & {"subject.add", "consent.grant", "consent.grant.refused"}
