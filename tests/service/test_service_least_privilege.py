"""Least privilege at the edges of the operator's role. An operator may verify a photo
against a subject they name, but may not list subjects (that is the enroller's), so a
refused verification must not tell them which subjects exist, nor what else a subject
consented to. Whether the subject was never added, erased, never consented, withdrew,
or consented to other purposes only, the operator gets one answer; the auditor still
reads the real reason in the audit log. And a reviewer sees the probe and the
reference photos of an identification only while they have a decision to give on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from facetrust.service import Role

from .conftest import (
    LiveServer,
    add_consented_subject,
    enrol,
    photo,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.service

KEYS = {"enroller": Role.ENROLLER, "operator": Role.OPERATOR, "auditor": Role.AUDITOR,
        "reviewer": Role.OPERATOR, "second-reviewer": Role.OPERATOR}

#: subject id -> the reason the gallery refuses to verify it for access-control.
REASONS = {
    "nobody": "UnknownSubject",
    "erased": "UnknownSubject",
    "registered": "ConsentRequired",
    "withdrew": "ConsentWithdrawn",
    "boarding-only": "PurposeNotConsented",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("least-privilege"), KEYS)
    with started.client("enroller") as client:
        for subject_id, purposes in [("erased", ("access-control",)),
                                     ("withdrew", ("access-control",)),
                                     ("boarding-only", ("boarding",))]:
            add_consented_subject(client, subject_id, purposes)
            assert enrol(client, subject_id, photo("Hu_Jintao", 1)).status_code == 201
        add_consented_subject(client, "hu")
        assert enrol(client, "hu", photo("Hu_Jintao", 1)).status_code == 201
        assert client.post("/v1/subjects", json={"subject_id": "registered"}).status_code == 201
        assert client.delete("/v1/subjects/erased").status_code == 200
        assert client.post("/v1/subjects/withdrew/consents/withdraw", json={}).status_code == 200
    yield started
    stop_server(started)


def verify(client: httpx.Client, subject_id: str) -> httpx.Response:
    with photo("Hu_Jintao", 2).open("rb") as handle:
        return client.post(
            f"/v1/subjects/{subject_id}/verify",
            files={"image": ("probe.jpg", handle, "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "LP-1"},
        )


def test_a_refused_verification_does_not_tell_an_operator_which_subjects_exist(
    server: LiveServer,
) -> None:
    answers = {}
    with server.client("operator") as operator:
        for subject_id in REASONS:
            response = verify(operator, subject_id)
            problem = response.json()
            answers[subject_id] = (response.status_code, problem["type"],
                                   problem["detail"].replace(repr(subject_id), "ID"))
    assert len(set(answers.values())) == 1, answers
    status, kind, detail = answers["nobody"]
    assert status == 404 and kind == "/problems/unknown-subject"
    assert "boarding" not in detail and "consent" in detail  # says what to check, not why
    with server.client("auditor") as auditor:
        events = auditor.get("/v1/audit/events",
                             params={"kind": "verify.refused", "limit": 100}).json()["events"]
    reasons = {e["subject_ids"][0]: e["error"] for e in events}
    assert reasons == REASONS  # the auditor still reads the real reason


def test_the_console_gives_an_operator_the_same_single_answer(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as browser:
        login = browser.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', login.text)
        assert token is not None
        browser.post("/console/login", data={"api_key": server.keys["operator"],
                                             "login_csrf": token[1]})
        form = browser.get("/console/verify-subject")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        answers = set()
        for subject_id in REASONS:
            with photo("Hu_Jintao", 2).open("rb") as handle:
                page = browser.post("/console/verify-subject", data={
                    "csrf": csrf[1], "subject_id": subject_id, "purpose": "access-control",
                    "case_ref": "LP-2"}, files={"photo": ("probe.jpg", handle, "image/jpeg")})
            shown = re.findall(r'role="alert">(.*?)</div>', page.text, re.S)
            answers.add((page.status_code, page.headers.get("x-problem-type"),
                         " ".join(shown).replace(subject_id, "ID")))
    assert len(answers) == 1, answers


def test_a_reviewer_who_has_given_every_decision_asked_of_them_sees_no_more_photos(
    server: LiveServer,
) -> None:
    with server.client("operator") as searcher, photo("Hu_Jintao", 2).open("rb") as handle:
        found = searcher.post("/v1/identify", data={"purpose": "access-control",
                                                    "case_ref": "LP-3"},
                              files={"image": ("probe.jpg", handle, "image/jpeg")})
    assert found.status_code == 200, found.text
    case = found.json()["identification_id"]
    assert [c["subject_id"] for c in found.json()["candidates"]] == ["hu"]
    probe = f"/v1/identifications/{case}/probe"
    with server.client("reviewer") as reviewer:
        assert reviewer.get(probe).status_code == 200  # a decision to give: shown
        confirmed = reviewer.post(f"/v1/identifications/{case}/reviews",
                                  json={"subject_id": "hu"})
        assert confirmed.json()["status"] == "pending"  # the quorum is 2
        assert reviewer.get("/v1/reviews").json()["cases"] == []  # nothing left for them
        again = reviewer.get(probe)
        assert again.status_code == 403, again.text
        assert again.json()["type"] == "/problems/review-not-allowed"
        assert reviewer.get(f"{probe.rsplit('/', 1)[0]}/candidates/hu/reference"
                            ).status_code == 403
        assert reviewer.get(f"/v1/identifications/{case}").json()["may_review"] is False
    with server.client("second-reviewer") as second:
        assert second.get(probe).status_code == 200  # still awaits their decision
    with server.client("auditor") as auditor:
        refused = auditor.get("/v1/audit/events", params={
            "kind": "pending-probe.view.refused", "actor": f"key:{server.key_ids['reviewer']}"}
        ).json()["events"]
    assert [e["error"] for e in refused] == ["ReviewNotAllowed"]
