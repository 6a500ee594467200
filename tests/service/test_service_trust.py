"""Trust at the service's edges, on the shared live server: every refusal audited,
admin and policy events, the readiness answer, the access log, subject verification,
request inputs (face choice, repeated parts, times) and the report folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.service import Role

from .conftest import (
    IDENTIFY_BURST,
    MAX_BODY_BYTES,
    MULTI_FACE,
    LiveServer,
    enrolled_subject,
    photo,
    start_server,
    stop_server,
)
from .test_service_http import assert_problem, files


def audit_events(server: LiveServer, **params: str) -> list[dict[str, Any]]:
    with server.client("auditor") as auditor:
        response = auditor.get("/v1/audit/events", params={**params, "limit": "1000"})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def actor(server: LiveServer, name: str) -> str:
    return f"key:{server.key_ids[name]}"


@pytest.fixture(scope="module")
def trusted(live_server: LiveServer) -> str:
    """One consented subject enrolled from one photo."""
    return enrolled_subject(live_server, "enroller-trust", "trust-hu")


# ---------------------------------------------------------------- refusals are audited
def test_an_enroller_identifying_a_face_is_refused_and_audited_with_the_photo_hash(
    live_server: LiveServer,
) -> None:
    image = photo("Colin_Powell", 2)
    with live_server.client("enroller-refused") as client:
        response = client.post(
            "/v1/identify", files=files(image=image),
            data={"purpose": "access-control", "case_ref": "CASE-R1"},
        )
    assert_problem(response, 403, "forbidden")
    events = audit_events(live_server, kind="service.refused",
                          actor=actor(live_server, "enroller-refused"))
    assert len(events) == 1, events
    event = events[0]
    assert event["route"] == "/v1/identify" and event["status"] == 403
    assert event["problem"] == "/problems/forbidden" and event["purpose"] == "access-control"
    assert event["case_ref"] == "CASE-R1"
    assert event["upload_sha256"] == {"image": [hashlib.sha256(image.read_bytes()).hexdigest()]}
    export = live_server.client("auditor").get("/v1/audit/export").text
    assert image.read_bytes()[:64].hex() not in export  # the hash, never the image


def test_identify_without_case_reference_is_audited_as_a_422(live_server: LiveServer) -> None:
    with live_server.client("operator-refused") as client:
        response = client.post(
            "/v1/identify", files=files(image=photo("Kofi_Annan", 2)),
            data={"purpose": "access-control"},
        )
    assert_problem(response, 422, "validation-error")
    events = audit_events(live_server, kind="service.refused",
                          actor=actor(live_server, "operator-refused"))
    refused = [e for e in events if e["status"] == 422 and e["route"] == "/v1/identify"]
    assert len(refused) == 1 and refused[0]["problem"] == "/problems/validation-error"
    assert refused[0]["purpose"] == "access-control"
    assert len(refused[0]["upload_sha256"]["image"][0]) == 64


def test_a_blank_case_reference_is_refused_by_the_gallery_as_from_the_shell(
    live_server: LiveServer,
) -> None:
    """Spaces pass the form's length check; the gallery, the one place the rule lives,
    refuses them (before the photo is decoded) and audits the refusal."""
    with live_server.client("operator-refused") as client:
        response = client.post(
            "/v1/identify", files=files(image=photo("Kofi_Annan", 2)),
            data={"purpose": "access-control", "case_ref": "   "},
        )
    assert_problem(response, 422, "invalid-parameter")
    assert "must name the case it belongs to" in response.json()["detail"]
    events = audit_events(live_server, kind="identify.refused",
                          actor=actor(live_server, "operator-refused"))
    assert [e["error"] for e in events] == ["InvalidParameter"]


@pytest.fixture
def quiet_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own: on the shared one, other tests' anonymous refusals in the
    same minute may already have used the allowance written in full (flood collapse)."""
    server = start_server(tmp_path, {"enroller-refused": Role.ENROLLER, "auditor": Role.AUDITOR})
    yield server
    stop_server(server)


def test_anonymous_and_oversized_refusals_name_the_subject(quiet_server: LiveServer) -> None:
    live_server = quiet_server
    subject = "trust-anon-target"
    with live_server.client() as anonymous:
        response = anonymous.post(
            f"/v1/subjects/{subject}/verify", files=files(image=photo("Kofi_Annan", 1)),
            data={"purpose": "access-control", "case_ref": "CASE-ANON"},
        )
    assert_problem(response, 401, "unauthorized")
    with live_server.client("enroller-refused") as client:
        big = client.post(
            f"/v1/subjects/{subject}/enrolments",
            files={"photo": ("big.jpg", b"\xff" * (MAX_BODY_BYTES + 1), "image/jpeg")},
        )
    assert_problem(big, 413, "body-too-large")
    events = audit_events(live_server, kind="service.refused", subject=subject)
    by_status = {e["status"]: e for e in events}
    # Both refused before the body was read: who and where, but nothing of the unread
    # upload (no purpose, no hash): a caller without a key costs no parsing.
    assert by_status[401]["actor"] == "anonymous"
    assert by_status[401]["route"] == "/v1/subjects/{subject_id}/verify"
    assert by_status[401].get("purpose") is None and by_status[401].get("upload_sha256") is None
    assert by_status[413]["route"] == "/v1/subjects/{subject_id}/enrolments"
    assert by_status[413]["upload_sha256"] is None
    assert by_status[413]["actor"] == "anonymous"  # refused before the key was checked
    assert by_status[413]["presented_key_id"] == live_server.key_ids["enroller-refused"]


def test_a_console_upload_without_a_session_is_audited(live_server: LiveServer) -> None:
    image = photo("Kofi_Annan", 2)
    with httpx.Client(base_url=live_server.url) as browser:
        response = browser.post(
            "/console/identify", files=files(image=image),
            data={"csrf": "x", "purpose": "access-control", "case_ref": "CASE-CONSOLE"},
        )
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    events = [e for e in audit_events(live_server, kind="service.refused", actor="anonymous")
              if e["route"] == "/console/identify"]
    assert events and events[0]["problem"] == "/problems/unauthorized"
    assert events[0]["case_ref"] == "CASE-CONSOLE"
    assert events[0]["upload_sha256"] == {
        "image": [hashlib.sha256(image.read_bytes()).hexdigest()]}


def test_refusals_by_the_gallery_carry_purpose_and_subject_ids(
    live_server: LiveServer, trusted: str
) -> None:
    with live_server.client("operator-refused") as client:
        response = client.post(
            f"/v1/subjects/{trusted}/verify", files=files(image=photo("Hu_Jintao", 2)),
            data={"purpose": "boarding", "case_ref": "CASE-R2"},
        )
    assert_problem(response, 404, "unknown-subject")  # as for a subject who does not exist
    assert not audit_events(live_server, kind="service.refused",
                            actor=actor(live_server, "operator-refused"), subject=trusted)
    (event,) = audit_events(live_server, kind="verify.refused",
                            actor=actor(live_server, "operator-refused"), subject=trusted)
    assert event["purpose"] == "boarding" and event["subject_ids"] == [trusted]
    assert event["problem"] == "/problems/unknown-subject" and event["status"] == 404
    assert event["error"] == "PurposeNotConsented"  # the auditor reads the real reason


def test_expect_seq_without_expect_mac_is_refused(live_server: LiveServer) -> None:
    with live_server.client("auditor") as auditor:
        assert_problem(auditor.get("/v1/audit/verify", params={"expect_seq": "5"}),
                       400, "bad-request")
        assert_problem(auditor.get("/v1/audit/verify", params={"expect_mac": "0" * 64}),
                       400, "bad-request")


# ---------------------------------------------------------------- keys and policy events
def test_creating_and_revoking_keys_is_audited(live_server: LiveServer) -> None:
    admin_actor = actor(live_server, "admin-audited")
    with live_server.client("admin-audited") as admin:
        created = admin.post("/v1/keys", json={"role": "auditor", "name": "audited temp"})
        assert created.status_code == 201
        key_id = created.json()["key_id"]
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
    made = audit_events(live_server, kind="apikey.create", actor=admin_actor)
    revoked = audit_events(live_server, kind="apikey.revoke", actor=admin_actor)
    assert [(e["key_id"], e["role"], e["name"]) for e in made] == [
        (key_id, "auditor", "audited temp")]
    assert [e["key_id"] for e in revoked] == [key_id]
    secret = created.json()["key"].split("_", 2)[2]
    assert secret not in live_server.client("auditor").get("/v1/audit/export").text


def test_the_policy_in_force_is_recorded_when_the_service_starts(live_server: LiveServer) -> None:
    events = audit_events(live_server, kind="policy.changed")
    assert events and events[-1]["actor"] == "service"
    policy = events[-1]["policy"]
    assert policy["review_quorum"] >= 2 and policy["searcher_may_review"] is False
    assert policy["limits"]["identify_burst"] == IDENTIFY_BURST


def test_the_policy_any_key_reads_is_the_one_the_audit_log_recorded(
    live_server: LiveServer,
) -> None:
    """``GET /v1/policy`` and the ``policy.changed`` event are one policy: the same
    settings and the same limits (the route listed six of the ten, built apart
    from the event); only the operating point is given whole (resolved for the
    model), not as the config names it."""
    recorded = audit_events(live_server, kind="policy.changed")[-1]["policy"]
    with live_server.client("auditor") as auditor:
        shown = auditor.get("/v1/policy").json()
    # the config names the point, or None for the model's default
    assert recorded["operating_point"] in (None, shown["operating_point"]["name"])
    assert shown["operating_point"]["threshold"] > 0
    assert {**shown, "operating_point": recorded["operating_point"]} == recorded


# ---------------------------------------------------------------- readiness and access log
def test_readiness_shows_details_only_to_a_key(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/readyz").json() == {"status": "ready"}
    with live_server.client("auditor") as auditor:
        details = auditor.get("/readyz").json()
    assert details["status"] == "ready" and details["model_id"] == "dlib-resnet-v1"
    assert details["audit_head_seq"] >= 1


def test_the_access_log_has_route_templates_not_subject_ids(
    live_server: LiveServer, trusted: str
) -> None:
    with live_server.client("enroller-trust") as client:
        assert client.get(f"/v1/subjects/{trusted}").status_code == 200
    log = live_server.log.read_text()
    assert '"GET /v1/subjects/{subject_id} HTTP/1.1" 200' in log
    assert "/v1/subjects/{subject_id}/enrolments" in log
    assert trusted not in log and "/v1/subjects/http-" not in log


# ---------------------------------------------------------------- verifying against a subject
def test_verify_subject_needs_a_case_reference_and_rounds_distances(
    live_server: LiveServer, trusted: str
) -> None:
    path = f"/v1/subjects/{trusted}/verify"
    with live_server.client("operator") as client:
        no_case = client.post(path, files=files(image=photo("Hu_Jintao", 2)),
                              data={"purpose": "access-control"})
        body = assert_problem(no_case, 422, "validation-error")
        assert ["body", "case_ref"] in [e["loc"] for e in body["errors"]]  # type: ignore[union-attr]
        response = client.post(path, files=files(image=photo("Hu_Jintao", 2)),
                               data={"purpose": "access-control", "case_ref": "CASE-V1"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["match"] is True
    assert round(result["distance"], 4) == result["distance"]
    assert len(repr(result["distance"]).split(".")[1]) <= 4
    events = audit_events(live_server, kind="verify", subject=trusted)
    assert events[-1]["case_ref"] == "CASE-V1"


NOT_AN_IMAGE = ("x.jpg", b"not an image", "image/jpeg")


@pytest.mark.parametrize(("key", "route", "fields", "data"), [
    ("operator-verify-limited", "/v1/subjects/trust-nobody/verify", ("image",),
     {"purpose": "access-control", "case_ref": "CASE-VRL"}),
    ("operator-photos-limited", "/v1/verify", ("image_a", "image_b"),
     {"purpose": "access-control", "case_ref": "CASE-PRL"}),
    ("enroller-limited", "/v1/subjects/trust-nobody/enrolments", ("photo",), {}),
])
def test_every_route_that_runs_the_face_model_is_rate_limited_like_identify(
    live_server: LiveServer, key: str, route: str, fields: tuple[str, ...], data: dict[str, str]
) -> None:
    """Verifying two photos costs the model twice what an identification does, and an
    enrolment as much: none may be repeated for free (identify's own test: test_service_http)."""
    statuses = []
    with live_server.client(key) as client:
        for _ in range(IDENTIFY_BURST + 1):
            response = client.post(route, files={f: NOT_AN_IMAGE for f in fields}, data=data)
            statuses.append(response.status_code)
    assert 429 not in statuses[:IDENTIFY_BURST], statuses
    assert_problem(response, 429, "rate-limited")
    assert int(response.headers["retry-after"]) >= 1


def test_every_upload_operation_of_the_api_is_a_rate_limited_model_operation() -> None:
    """An upload route added later without a rate limit fails here. A consent's evidence
    document is hashed, never run through the face model."""
    from facetrust.service.app import openapi_document
    from facetrust.service.auth import MODEL_OPERATIONS

    uploads = {
        operation["operationId"]
        for path in openapi_document()["paths"].values() for operation in path.values()
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
    }
    assert uploads - {"grant_consent"} == MODEL_OPERATIONS


@pytest.mark.parametrize(("key", "form", "fields", "data"), [
    ("operator-console-limited", "/console/verify", ("image_a", "image_b"),
     {"purpose": "access-control", "case_ref": "CASE-CRL"}),
    ("enroller-console-limited", "/console/enrol", ("photo",), {"subject_id": "trust-nobody"}),
])
def test_the_console_forms_that_run_the_face_model_share_the_api_rate_limit(
    live_server: LiveServer, key: str, form: str, fields: tuple[str, ...], data: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server.url) as browser:
        login = browser.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', login.text)
        assert token is not None
        browser.post("/console/login",
                     data={"api_key": live_server.keys[key], "login_csrf": token[1]})
        page = browser.get(form)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert page.status_code == 200 and csrf is not None
        statuses = []
        for _ in range(IDENTIFY_BURST + 1):
            response = browser.post(form, files={f: NOT_AN_IMAGE for f in fields},
                                    data={**data, "csrf": csrf[1]})
            statuses.append(response.status_code)
    assert 429 not in statuses[:IDENTIFY_BURST], statuses
    assert statuses[-1] == 429 and "rate-limited" in response.text
    events = audit_events(live_server, kind="service.refused", actor=actor(live_server, key))
    assert [e["status"] for e in events if e["route"] == form][-1:] == [429]


def test_identify_distances_are_rounded(live_server: LiveServer, trusted: str) -> None:
    with live_server.client("operator2") as client:
        response = client.post(
            "/v1/identify", files=files(image=photo("Hu_Jintao", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-ROUND"},
        )
    assert response.status_code == 200, response.text
    for candidate in response.json()["candidates"]:
        assert len(repr(candidate["distance"]).split(".")[1]) <= 4


# ---------------------------------------------------------------- request inputs
def test_two_image_parts_are_refused(live_server: LiveServer) -> None:
    first, second = photo("Colin_Powell", 2), photo("Kofi_Annan", 2)
    with live_server.client("operator3") as client:
        response = client.post(
            "/v1/identify",
            files=[("image", (first.name, first.read_bytes(), "image/jpeg")),
                   ("image", (second.name, second.read_bytes(), "image/jpeg"))],
            data={"purpose": "access-control", "case_ref": "CASE-TWO"},
        )
    body = assert_problem(response, 422, "validation-error")
    assert "2 'image' parts" in str(body["detail"])


def test_the_face_parameter_picks_a_face_in_a_group_photo(live_server: LiveServer) -> None:
    data = {"purpose": "access-control", "case_ref": "CASE-FACE"}
    with live_server.client("operator3") as client:
        default = client.post("/v1/identify", files=files(image=MULTI_FACE), data=data)
        single = client.post("/v1/identify", files=files(image=MULTI_FACE),
                             data={**data, "face": "single"})
        crop = client.post("/v1/identify", files=files(image=MULTI_FACE),
                           data={**data, "face": "crop"})
        largest = client.post("/v1/identify", files=files(image=MULTI_FACE),
                              data={**data, "face": "largest"})
        second = client.post("/v1/identify", files=files(image=MULTI_FACE),
                             data={**data, "face": "1"})
        bogus = client.post("/v1/identify", files=files(image=MULTI_FACE),
                            data={**data, "face": "biggest"})
        pair = client.post(
            "/v1/verify", files=files(image_a=MULTI_FACE, image_b=MULTI_FACE),
            data={**data, "face": "largest"},
        )
    assert default.status_code == 200, default.text  # "dominant": the face it is framed on
    assert crop.status_code == 200, crop.text  # the whole image read as one face
    assert_problem(single, 422, "multiple-faces")
    assert largest.status_code == 200, largest.text
    assert second.status_code == 200, second.text
    assert_problem(bogus, 422, "validation-error")
    assert pair.status_code == 200 and pair.json()["match"] is True


@pytest.mark.parametrize("since", ["2020-01-01", "2020-01-01T00:00", "2020-01-01T00:00:00Z"])
def test_audit_filters_take_dates_and_naive_times_as_utc(
    live_server: LiveServer, since: str
) -> None:
    with live_server.client("auditor") as auditor:
        response = auditor.get("/v1/audit/events", params={"since": since, "limit": "1"})
        future = auditor.get("/v1/audit/events", params={"since": "2999-01-01"})
        bad = auditor.get("/v1/audit/events", params={"since": "yesterday"})
    assert response.status_code == 200, response.text
    assert len(response.json()["events"]) == 1
    assert future.json()["events"] == []
    assert "ISO 8601" in str(assert_problem(bad, 422, "invalid-parameter")["detail"])


# ---------------------------------------------------------------- reports
def test_links_in_the_reports_folder_are_never_served(live_server: LiveServer) -> None:
    reports = live_server.folder / "reports"
    secret = next(p for p in live_server.folder.iterdir() if p.suffix in (".key", ".db"))
    outside = live_server.folder / "outside.json"
    outside.write_text('{"private": true}')
    (reports / "gallery.json").symlink_to(secret)
    (reports / "outside.json").symlink_to(outside)
    os.mkfifo(reports / "pipe.json")
    try:
        with live_server.client("auditor") as auditor:
            listed = [r["name"] for r in auditor.get("/v1/reports").json()["reports"]]
            assert listed == ["lfw-verification.json"]
            for name in ("gallery.json", "outside.json", "pipe.json"):
                assert_problem(auditor.get(f"/v1/reports/{name}"), 404, "not-found")
    finally:
        for name in ("gallery.json", "outside.json", "pipe.json"):
            Path(reports / name).unlink()
