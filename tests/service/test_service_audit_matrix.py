"""The audit matrix of the REST service and the console for the routes that read or change
a subject's record, consents or biometric data (subject views, consent grants and
withdrawals, erasure): for each outcome, refusals before the gallery (no key, wrong role)
and refusals by it (unknown subject, invalid request) included, exactly the expected
audit events, with the right actor, purpose and subjects, and the chain still verifies.

The searches, enrolments and reviews have the same matrix in test_service_roles.py
(role refusals), test_service_http.py and the CLI's test_audit_matrix_cli.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.gallery import Gallery
from facetrust.gate import events
from facetrust.service import Role

from .conftest import (
    EVIDENCE_SHA256,
    MAX_BODY_BYTES,
    LiveServer,
    add_consented_subject,
    enrol,
    photo,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.service

KEYS = {"enroller": Role.ENROLLER, "operator": Role.OPERATOR, "auditor": Role.AUDITOR,
        "admin": Role.ADMIN}
CONSENT = {"purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
           "evidence_ref": "FORM-2", "evidence_sha256": EVIDENCE_SHA256, "notice_version": "v1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own, with 'hu' (access-control, enrolled) and 'gone' (to erase)."""
    started = start_server(tmp_path_factory.mktemp("audit-matrix"), KEYS)
    with started.client("enroller") as client:
        for subject_id in ("hu", "gone"):
            add_consented_subject(client, subject_id)
        assert enrol(client, "hu", photo("Hu_Jintao", 1)).status_code == 201
    yield started
    stop_server(started)


def actor(server: LiveServer, who: str | None) -> str:
    return f"key:{server.key_ids[who]}" if who else "anonymous"


#: (test id, key name or None, method, path, JSON body, status, {kind: count}).
MATRIX: list[tuple[str, str | None, str, str, Any, int, dict[str, int]]] = [
    ("view", "enroller", "GET", "/v1/subjects/hu", None, 200, {"subject.view": 1}),
    ("view-unknown", "enroller", "GET", "/v1/subjects/nobody", None, 404,
     {"subject.view.refused": 1}),
    ("view-wrong-role", "operator", "GET", "/v1/subjects/hu", None, 403,
     {"service.refused": 1}),
    ("view-no-key", None, "GET", "/v1/subjects/hu", None, 401, {"service.refused": 1}),
    ("consents", "enroller", "GET", "/v1/subjects/hu/consents", None, 200,
     {"subject.view": 1}),
    ("consents-unknown", "enroller", "GET", "/v1/subjects/nobody/consents", None, 404,
     {"subject.view.refused": 1}),
    ("consents-wrong-role", "auditor", "GET", "/v1/subjects/hu/consents", None, 403,
     {"service.refused": 1}),
    ("grant", "enroller", "POST", "/v1/subjects/hu/consents", CONSENT, 201,
     {"consent.grant": 1}),
    ("grant-unknown", "enroller", "POST", "/v1/subjects/nobody/consents", CONSENT, 404,
     {"consent.grant.refused": 1}),
    ("grant-unknown-purpose", "enroller", "POST", "/v1/subjects/hu/consents",
     {**CONSENT, "purposes": ["nonsense"]}, 422, {"consent.grant.refused": 1}),
    ("grant-malformed", "enroller", "POST", "/v1/subjects/hu/consents",
     {"purposes": ["access-control"]}, 422, {"service.refused": 1}),
    ("grant-wrong-role", "operator", "POST", "/v1/subjects/hu/consents", CONSENT, 403,
     {"service.refused": 1}),
    ("withdraw-unknown", "enroller", "POST", "/v1/subjects/nobody/consents/withdraw", {}, 404,
     {"consent.withdraw.refused": 1}),
    ("withdraw-wrong-role", "admin", "POST", "/v1/subjects/hu/consents/withdraw", {}, 403,
     {"service.refused": 1}),
    ("withdraw-no-key", None, "POST", "/v1/subjects/hu/consents/withdraw", {}, 401,
     {"service.refused": 1}),
    ("erase-unknown", "enroller", "DELETE", "/v1/subjects/nobody", None, 404,
     {"erase.refused": 1}),
    ("erase-wrong-role", "operator", "DELETE", "/v1/subjects/hu", None, 403,
     {"service.refused": 1}),
    ("erase-no-key", None, "DELETE", "/v1/subjects/hu", None, 401, {"service.refused": 1}),
    ("erase", "enroller", "DELETE", "/v1/subjects/gone", None, 200,
     {"erase.started": 1, "erase": 1}),
    ("erase-again", "enroller", "DELETE", "/v1/subjects/gone", None, 404,
     {"erase.refused": 1}),
]


@pytest.mark.parametrize(
    "who,method,path,body,status,kinds", [row[1:] for row in MATRIX],
    ids=[row[0] for row in MATRIX],
)
def test_each_route_and_refusal_leaves_the_expected_audit_events(
    server: LiveServer, who: str | None, method: str, path: str, body: Any, status: int,
    kinds: dict[str, int],
) -> None:
    before = server.audit_head()
    with server.client(who) as client:
        answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    added = server.events_after(before)
    assert Counter(e["kind"] for e in added) == Counter(kinds), added
    subject = path.split("/")[3]
    for event in added:
        assert event["actor"] == actor(server, who), event
        assert event["subject_ids"] == [subject], event
        if event["kind"].endswith(".refused"):  # the service's fields, whoever refused
            assert event["route"] == template_of(path), event
            assert (event["status"], event["problem"]) == (status, answer.json()["type"]), event
            assert event["request_id"] == answer.headers["x-request-id"], event


def template_of(path: str) -> str:
    """The route template of ``path`` (its subject id as ``{subject_id}``)."""
    return re.sub(r"^/v1/subjects/[^/]+", "/v1/subjects/{subject_id}", path)


def logged_in(server: LiveServer, who: str) -> tuple[httpx.Client, str]:
    """A console session of ``who`` and its form token."""
    browser = httpx.Client(base_url=server.url, timeout=60.0)
    form = browser.get("/console/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = browser.post("/console/login", data={"api_key": server.keys[who],
                                                  "login_csrf": token[1]})
    assert answer.status_code == 303, answer.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/console/").text)
    assert csrf is not None
    return browser, csrf[1]


@pytest.mark.parametrize("who,path,form,status,kinds", [
    ("enroller", "/console/subjects/hu/erase", {"confirm_id": "not-hu"}, 422,
     {"erase.refused": 1, "subject.view": 1}),  # the page shown again is a view
    ("enroller", "/console/subjects/nobody/withdraw", {}, 404,
     {"consent.withdraw.refused": 1}),
    ("operator", "/console/subjects/hu/erase", {"confirm_id": "hu"}, 403,
     {"service.refused": 1}),
    ("auditor", "/console/subjects/hu/withdraw", {}, 403, {"service.refused": 1}),
], ids=["erase-wrong-confirmation", "withdraw-unknown", "erase-wrong-role",
        "withdraw-wrong-role"])
def test_console_subject_actions_leave_the_expected_audit_events(
    server: LiveServer, who: str, path: str, form: dict[str, str], status: int,
    kinds: dict[str, int],
) -> None:
    browser, csrf = logged_in(server, who)
    try:
        before = server.audit_head()
        answer = browser.post(path, data={**form, "csrf": csrf})
    finally:
        browser.close()
    assert answer.status_code == status, answer.text
    added = server.events_after(before)
    assert Counter(e["kind"] for e in added) == Counter(kinds), added
    assert {e["actor"] for e in added} == {actor(server, who)}
    with server.client("enroller") as client:
        assert client.get("/v1/subjects/hu").json()["template_count"] == 1  # nothing erased


def test_oversized_and_console_reads_of_a_subject_are_audited_when_refused(
    server: LiveServer,
) -> None:
    before = server.audit_head()
    with server.client("enroller") as client:
        big = client.post("/v1/subjects/hu/consents", files={
            "evidence": ("form.pdf", b"\0" * (MAX_BODY_BYTES + 1), "application/pdf")})
    assert big.status_code == 413, big.text
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"], event["status"]) == ("service.refused", "anonymous",
                                                                 413)
    assert event["presented_key_id"] == server.key_ids["enroller"]
    assert event["subject_ids"] == ["hu"]
    browser, _ = logged_in(server, "operator")
    try:
        before = server.audit_head()
        assert browser.get("/console/subjects/hu").status_code == 403
    finally:
        browser.close()
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"]) == ("service.refused", actor(server, "operator"))
    with httpx.Client(base_url=server.url) as anonymous:
        before = server.audit_head()
        assert anonymous.get("/console/subjects/hu").headers["location"] == "/console/login"
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"], event["status"]) == ("service.refused", "anonymous",
                                                                 303)


def test_the_routes_of_this_matrix_are_audited_when_refused_before_the_gallery() -> None:
    from facetrust.service.refusals import BIOMETRIC_ROUTES

    named = {(method, path.replace("/hu", "/{subject_id}").replace("/nobody", "/{subject_id}")
              .replace("/gone", "/{subject_id}")) for _, _, method, path, *_ in MATRIX}
    assert named <= set(BIOMETRIC_ROUTES)


def test_refusals_of_a_request_with_an_idempotency_key_are_audited(server: LiveServer) -> None:
    """A request with an Idempotency-Key runs in one transaction with its stored answer;
    a refusal rolls that back, but not its audit event."""
    cat = Path(__file__).parent.parent / "data" / "non_faces" / "chelsea_cat.jpg"
    with server.client("enroller") as client:
        before = server.audit_head()
        granted = client.post("/v1/subjects/nobody/consents", json=CONSENT,
                              headers={"Idempotency-Key": "matrix-grant-1"})
        assert granted.status_code == 404, granted.text
        assert Counter(e["kind"] for e in server.events_after(before)) == Counter(
            {"consent.grant.refused": 1})
        before = server.audit_head()
        with cat.open("rb") as handle:
            enrolled = client.post("/v1/subjects/hu/enrolments",
                                   files={"photo": ("cat.jpg", handle, "image/jpeg")},
                                   headers={"Idempotency-Key": "matrix-enrol-1"})
        assert enrolled.status_code == 422, enrolled.text
        (refused,) = server.events_after(before)
        assert (refused["kind"], refused["error"], refused["subject_ids"]) == (
            "enrol.refused", "NoFaceFound", ["hu"])
        assert (refused["route"], refused["status"], refused["problem"]) == (
            "/v1/subjects/{subject_id}/enrolments", 422, enrolled.json()["type"])


CAT = Path(__file__).parent.parent / "data" / "non_faces" / "chelsea_cat.jpg"

#: Searches and enrolments refused by the gallery, and one refused before it (no case
#: reference): (test id, key name, path, form, (file field, photo), status, the one
#: event's kind, its purpose, subject ids and error).
SEARCHES: list[tuple[str, str, str, dict[str, str], tuple[str, Path], int, str, str | None,
                     list[str], str | None]] = [
    ("verify-purpose-not-consented", "operator", "/v1/subjects/hu/verify",
     {"purpose": "boarding", "case_ref": "CASE-M1"}, ("image", photo("Hu_Jintao", 2)), 404,
     "verify.refused", "boarding", ["hu"], "PurposeNotConsented"),
    ("identify-no-face", "operator", "/v1/identify",
     {"purpose": "access-control", "case_ref": "CASE-M2"}, ("image", CAT), 422,
     "identify.refused", "access-control", [], "NoFaceFound"),
    ("identify-blank-case", "operator", "/v1/identify",
     {"purpose": "access-control", "case_ref": "   "}, ("image", photo("Hu_Jintao", 2)), 422,
     "identify.refused", "access-control", [], "InvalidParameter"),
    ("enrol-no-face", "enroller", "/v1/subjects/hu/enrolments", {}, ("photo", CAT), 422,
     "enrol.refused", None, ["hu"], "NoFaceFound"),
    ("enrol-unknown", "enroller", "/v1/subjects/nobody/enrolments", {},
     ("photo", photo("Hu_Jintao", 2)), 404, "enrol.refused", None, ["nobody"],
     "UnknownSubject"),
    ("identify-no-case", "operator", "/v1/identify", {"purpose": "access-control"},
     ("image", photo("Hu_Jintao", 2)), 422, "service.refused", "access-control", [], None),
]


@pytest.mark.parametrize(
    "who,path,form,upload,status,kind,purpose,subjects,error", [row[1:] for row in SEARCHES],
    ids=[row[0] for row in SEARCHES],
)
def test_a_refused_search_or_enrolment_leaves_one_event_with_the_services_fields(
    server: LiveServer, who: str, path: str, form: dict[str, str], upload: tuple[str, Path],
    status: int, kind: str, purpose: str | None, subjects: list[str], error: str | None,
) -> None:
    """One refused request, one event: the gallery's ``<kind>.refused`` (the real reason)
    with the service's route, problem type and status; ``service.refused`` only for a
    request the gallery never saw."""
    field, path_of_photo = upload
    before = server.audit_head()
    with server.client(who) as client, path_of_photo.open("rb") as handle:
        answer = client.post(path, data=form,
                             files={field: (path_of_photo.name, handle, "image/jpeg")})
    assert answer.status_code == status, answer.text
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"]) == (kind, actor(server, who))
    assert (event["purpose"], event["subject_ids"], event.get("error")) == (
        purpose, subjects, error)
    assert (event["route"], event["status"], event["problem"]) == (
        template_of(path), status, answer.json()["type"])
    assert event["request_id"] == answer.headers["x-request-id"]


def test_a_review_queue_read_refused_by_the_gallery_without_its_own_event_is_audited(
    server: LiveServer,
) -> None:
    """A bad page cursor is refused by the gallery before it reads the queue, without a
    refusal event of its own: the service's ``service.refused`` is the one event."""
    before = server.audit_head()
    with server.client("operator") as client:
        answer = client.get("/v1/reviews", params={"after": "not-a-cursor"})
    assert answer.status_code == 422, answer.text
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"], event["route"], event["status"]) == (
        "service.refused", actor(server, "operator"), "/v1/reviews", 422)
    assert event["problem"] == answer.json()["type"]


def test_a_refused_duplicate_enrolment_leaves_one_event_with_or_without_a_retry_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The gallery's ``enrol.refused`` (reason ``duplicate``) is the one event, also when
    the request's transaction (an Idempotency-Key) is rolled back."""
    strict = start_server(tmp_path_factory.mktemp("duplicates"),
                          {"enroller": Role.ENROLLER, "auditor": Role.AUDITOR},
                          duplicate_policy="refuse")
    try:
        with strict.client("enroller") as client:
            for subject_id in ("hu", "twin"):
                add_consented_subject(client, subject_id)
            assert enrol(client, "hu", photo("Hu_Jintao", 1)).status_code == 201
            for retry in ({}, {"Idempotency-Key": "matrix-duplicate-1"}):
                before = strict.audit_head()
                with photo("Hu_Jintao", 2).open("rb") as handle:
                    answer = client.post("/v1/subjects/twin/enrolments", headers=retry,
                                         files={"photo": ("hu.jpg", handle, "image/jpeg")})
                assert answer.status_code == 409, answer.text
                (event,) = strict.events_after(before)
                assert (event["kind"], event["error"], event["reason"]) == (
                    "enrol.refused", "DuplicateEnrolment", "duplicate")
                assert [d["subject_id"] for d in event["duplicates"]] == ["hu"]
                assert (event["subject_ids"], event["actor"]) == (["twin"],
                                                                  actor(strict, "enroller"))
                assert (event["route"], event["status"], event["problem"]) == (
                    "/v1/subjects/{subject_id}/enrolments", 409, answer.json()["type"])
    finally:
        stop_server(strict)


def test_verifying_an_event_only_traveller_outside_the_gate_is_a_problem_and_audited(
    server: LiveServer,
) -> None:
    """A traveller enrolled for one event only consented to that event's gate alone: a
    1:1 verification against them through the REST service, for the event's purpose
    too, is refused with a 409 that names the event, and audited as verify.refused."""
    with Gallery.find(server.folder) as gallery:
        now = gallery.now()
        events.open_event(gallery, "rest-flight", purpose="boarding", actor="agent",
                          valid_from=now - timedelta(minutes=1),
                          valid_to=now + timedelta(hours=3))
        traveller = events.enroll_for_event(
            gallery, "rest-flight", photo("Vicente_Fox", 1), evidence_ref="k1",
            evidence_sha256=EVIDENCE_SHA256, notice_version="v1", actor="agent",
        )
    before = server.audit_head()
    with server.client("operator") as client:
        image = photo("Vicente_Fox", 3)
        answer = client.post(
            f"/v1/subjects/{traveller}/verify",
            files={"image": (image.name, image.read_bytes(), "image/jpeg")},
            data={"purpose": "boarding", "case_ref": "CASE-EV"},
        )
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["type"] == "/problems/event-only-subject"
    assert "'rest-flight' only" in problem["detail"]
    assert "only its gate matches them" in problem["detail"]
    (event,) = server.events_after(before)
    assert (event["kind"], event["actor"]) == ("verify.refused", actor(server, "operator"))
    assert (event["subject_ids"], event["purpose"]) == ([traveller], "boarding")
    assert (event["error"], event["status"]) == ("EventOnlySubject", 409)
    assert event["problem"] == "/problems/event-only-subject"
