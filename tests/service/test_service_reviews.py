"""The review API on the live server: the queue, a review case, and the photos a
reviewer compares (no-store, reviewers only, every view and refusal audited)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from .conftest import LiveServer, add_consented_subject, photo

pytestmark = [pytest.mark.service, pytest.mark.slow]

BUSH = "George_W_Bush"


def summary_of(case: dict[str, Any], subject_id: str) -> str:
    return str(next(c["summary"] for c in case["candidates"] if c["subject_id"] == subject_id))


def actor(server: LiveServer, name: str) -> str:
    return f"key:{server.key_ids[name]}"


def audit_events(server: LiveServer, kind: str, who: str) -> list[dict[str, Any]]:
    with server.client("auditor") as auditor:
        response = auditor.get("/v1/audit/events", params={"kind": kind, "actor": who,
                                                           "limit": "1000"})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


@pytest.fixture(scope="module")
def pending(live_server: LiveServer) -> dict[str, Any]:
    """rv-bush enrolled with the photo kept, rv-bush-twin without; one identification."""
    with live_server.client("enroller") as enroller:
        for subject_id, number, keep in (("rv-bush", 1, "true"), ("rv-bush-twin", 2, "false")):
            add_consented_subject(enroller, subject_id)
            path = photo(BUSH, number)
            response = enroller.post(
                f"/v1/subjects/{subject_id}/enrolments",
                files={"photo": (path.name, path.read_bytes(), "image/jpeg")},
                data={"keep_photo": keep},
            )
            assert response.status_code == 201, response.text
    with live_server.client("review-searcher") as searcher:
        path = photo(BUSH, 3)
        found = searcher.post(
            "/v1/identify", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "RV-HTTP-1", "k": "3"},
        )
    assert found.status_code == 200, found.text
    result: dict[str, Any] = found.json()
    assert {c["subject_id"] for c in result["candidates"]} >= {"rv-bush", "rv-bush-twin"}
    return result


def test_the_queue_lists_it_for_reviewers_but_not_for_the_searcher(
    live_server: LiveServer, pending: dict[str, Any]
) -> None:
    ident = pending["identification_id"]
    with live_server.client("review-searcher") as searcher:
        own = searcher.get("/v1/reviews", params={"limit": "200"}).json()
    assert ident not in [c["identification_id"] for c in own["cases"]]
    with live_server.client("reviewer-a") as reviewer:
        queue = reviewer.get("/v1/reviews", params={"limit": "200"}).json()
    case = next(c for c in queue["cases"] if c["identification_id"] == ident)
    assert case["case_ref"] == "RV-HTTP-1" and case["purpose"] == "access-control"
    assert case["searched_by"] == actor(live_server, "review-searcher")
    assert summary_of(case, "rv-bush") == "0 of 2 confirmations; waiting for a first reviewer."
    assert audit_events(live_server, "review.queue", actor(live_server, "reviewer-a"))


def test_photos_go_to_reviewers_only_uncached_and_audited(
    live_server: LiveServer, pending: dict[str, Any]
) -> None:
    ident = pending["identification_id"]
    base = f"/v1/identifications/{ident}"
    with live_server.client("review-searcher") as searcher:
        refused = searcher.get(f"{base}/probe")
        assert refused.status_code == 403
        assert refused.json()["type"] == "/problems/review-not-allowed"
        assert "Ask another operator" in refused.json()["detail"]
    assert audit_events(
        live_server, "pending-probe.view.refused", actor(live_server, "review-searcher")
    )
    with live_server.client("reviewer-a") as reviewer:
        probe = reviewer.get(f"{base}/probe")
        reference = reviewer.get(f"{base}/candidates/rv-bush/reference")
        missing = reviewer.get(f"{base}/candidates/rv-bush-twin/reference")
        stranger = reviewer.get(f"{base}/candidates/web-junichiro/reference")
        with live_server.client("enroller") as enroller:
            assert enroller.get(f"{base}/probe").status_code == 403  # role: not an operator
    for shown in (probe, reference):
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert shown.headers["cache-control"] == "no-store"
        assert Image.open(io.BytesIO(shown.content)).width <= 400
    assert missing.status_code == 404
    assert "No reference photo kept: confirm against an identity document" in (
        missing.json()["detail"]
    )
    assert stranger.status_code == 403 and "not a candidate" in stranger.json()["detail"]
    views = audit_events(live_server, "reference.view", actor(live_server, "reviewer-a"))
    assert {(tuple(e["subject_ids"]), e["photo_kept"]) for e in views
            if e["identification_id"] == ident} == {
        (("rv-bush",), True), (("rv-bush-twin",), False)
    }
    assert audit_events(live_server, "reference.view.refused", actor(live_server, "reviewer-a"))
    assert audit_events(live_server, "pending-probe.view", actor(live_server, "reviewer-a"))


def test_a_decision_deletes_the_probe_and_the_case_says_who_confirmed(
    live_server: LiveServer, pending: dict[str, Any]
) -> None:
    ident = pending["identification_id"]
    base = f"/v1/identifications/{ident}"
    with (
        live_server.client("reviewer-a") as one,
        live_server.client("reviewer-b") as two,
    ):
        assert one.post(f"{base}/reviews", json={"subject_id": "rv-bush"}).status_code == 200
        halfway = two.get(base).json()
        assert summary_of(halfway, "rv-bush") == (
            "1 of 2 confirmations; waiting for a second reviewer."
        )
        assert two.post(f"{base}/reviews", json={"subject_id": "rv-bush"}).status_code == 200
        case = two.get(base).json()
        gone = two.get(f"{base}/probe")
        missing = two.get("/v1/identifications/nope")
    assert case["status"] == "confirmed" and case["probe_kept"] is False
    assert summary_of(case, "rv-bush") == (
        f"Confirmed by {actor(live_server, 'reviewer-a')} and {actor(live_server, 'reviewer-b')}."
    )
    assert gone.status_code == 409 and gone.json()["type"] == "/problems/review-closed"
    assert missing.status_code == 404
    deleted = audit_events(live_server, "pending-probe.deleted", actor(live_server, "reviewer-b"))
    assert [e["reason"] for e in deleted if e["identification_id"] == ident] == [
        "identification confirmed"
    ]


def test_the_console_photo_routes_need_a_session(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as anonymous:
        response = anonymous.get("/console/reviews/x/probe.jpg")
    assert response.status_code == 303 and response.headers["location"] == "/console/login"


FOX = "Vicente_Fox"


def consented_twice(client: httpx.Client, subject_id: str) -> str:
    """``subject_id`` with an access-control consent and a separate boarding one (so
    withdrawing access-control erases nobody); returns the access-control consent's id."""
    assert client.post("/v1/subjects", json={"subject_id": subject_id}).status_code == 201
    ids = []
    for purpose in ("access-control", "boarding"):
        granted = client.post(f"/v1/subjects/{subject_id}/consents", json={
            "purposes": [purpose], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": f"form-{subject_id}", "evidence_sha256": "ab" * 32,
            "notice_version": "2026-01",
        })
        assert granted.status_code == 201, granted.text
        ids.append(granted.json()["consent_id"])
    return str(ids[0])


def test_a_case_whose_candidates_all_lost_eligibility_is_closed_over_rest_and_console(
    live_server: LiveServer,
) -> None:
    """Consent to the search's purpose withdrawn for one candidate: that candidate is
    "no longer eligible", the other stays reviewable. Withdrawn for the last one too:
    the case leaves the queue, its probe goes, the closure is audited, and the API
    and the console say in plain English why it closed (409 for a decision, never 500)."""
    from .test_console_edges import csrf_of, logged_in

    # both enrolled from the photo searched: the two nearest whoever else the
    # session's other tests enrol
    path = photo(FOX, 5)
    with live_server.client("enroller-closing") as enroller:
        consent = {}
        for subject_id in ("cl-fox", "cl-fox-twin"):
            consent[subject_id] = consented_twice(enroller, subject_id)
            enrolled = enroller.post(
                f"/v1/subjects/{subject_id}/enrolments",
                files={"photo": (path.name, path.read_bytes(), "image/jpeg")},
                data={"keep_photo": "true"},
            )
            assert enrolled.status_code == 201, enrolled.text
    with live_server.client("closing-searcher") as searcher:
        found = searcher.post(
            "/v1/identify", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "RV-CLOSE-1", "k": "2"},
        )
    assert found.status_code == 200, found.text
    ident = found.json()["identification_id"]
    assert {c["subject_id"] for c in found.json()["candidates"]} == {"cl-fox", "cl-fox-twin"}
    base = f"/v1/identifications/{ident}"

    def withdraw(subject_id: str) -> None:
        with live_server.client("enroller-closing") as enroller:
            done = enroller.post(f"/v1/subjects/{subject_id}/consents/withdraw",
                                 json={"consent_id": consent[subject_id], "reason": "asked"})
        assert done.status_code == 200, done.text
        assert done.json()["erasure"] is None

    withdraw("cl-fox")
    with live_server.client("closing-reviewer") as reviewer:
        case = reviewer.get(base).json()
        refused = reviewer.post(f"{base}/reviews", json={"subject_id": "cl-fox"})
        queue = reviewer.get("/v1/reviews", params={"limit": "200"}).json()
        assert reviewer.get(f"{base}/probe").status_code == 200
    assert case["status"] == "pending" and case["may_review"]
    fox = next(c for c in case["candidates"] if c["subject_id"] == "cl-fox")
    assert fox["status"] == "ineligible"
    assert fox["ineligible_reason"] == "consent to access-control withdrawn"
    assert fox["summary"] == (
        "No longer eligible (consent to access-control withdrawn): it cannot be confirmed."
    )
    assert summary_of(case, "cl-fox-twin") == (
        "0 of 2 confirmations; waiting for a first reviewer."
    )
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/review-closed"
    assert "'cl-fox'" in refused.json()["detail"]
    assert "is no longer eligible (consent to access-control withdrawn)" in (
        refused.json()["detail"]
    )
    assert ident in [c["identification_id"] for c in queue["cases"]]
    with logged_in(live_server, "closing-reviewer") as browser:
        page = browser.get(f"/console/reviews/{ident}")
    assert page.status_code == 200
    assert "No longer eligible (consent to access-control withdrawn)" in page.text
    assert 'aria-label="Confirm cl-fox-twin"' in page.text
    assert 'aria-label="Confirm cl-fox"' not in page.text
    assert "/reference/cl-fox.jpg" not in page.text  # it would be refused: not linked
    assert "/reference/cl-fox-twin.jpg" in page.text

    withdraw("cl-fox-twin")
    closed_because = "was closed because none of its candidates is eligible any more"
    with live_server.client("closing-reviewer") as reviewer:
        queue = reviewer.get("/v1/reviews", params={"limit": "200"}).json()
        case = reviewer.get(base).json()
        refused = reviewer.post(f"{base}/reviews", json={"subject_id": "cl-fox-twin"})
        probe = reviewer.get(f"{base}/probe")
        reference = reviewer.get(f"{base}/candidates/cl-fox-twin/reference")
    assert ident not in [c["identification_id"] for c in queue["cases"]]
    assert case["status"] == "closed" and not case["may_review"]
    assert closed_because in case["reason"] and case["probe_kept"] is False
    assert [c["status"] for c in case["candidates"]] == ["ineligible", "ineligible"]
    for answer in (refused, probe, reference):
        assert answer.status_code == 409, answer.text
        assert answer.json()["type"] == "/problems/review-closed"
        assert closed_because in answer.json()["detail"]
    with logged_in(live_server, "closing-reviewer") as browser:
        page = browser.get(f"/console/reviews/{ident}")
        sent = browser.post(f"/console/reviews/{ident}", data={
            "csrf": csrf_of(browser, f"/console/reviews/{ident}"),
            "subject_id": "cl-fox-twin", "decision": "confirm",
        })
        listed = browser.get("/console/reviews")
    assert page.status_code == 200 and closed_because in page.text
    assert 'id="case-status">closed<' in page.text and "<form" not in page.text.split(
        'id="cards"')[1]
    assert sent.status_code == 409 and closed_because in sent.text
    assert listed.status_code == 200 and ident not in listed.text

    closer = actor(live_server, "enroller-closing")
    closed = [e for e in audit_events(live_server, "identification.closed", closer)
              if e["identification_id"] == ident]
    assert len(closed) == 1 and closed[0]["case_ref"] == "RV-CLOSE-1"
    assert closed[0]["ineligible"] == {"cl-fox": "consent to access-control withdrawn",
                                       "cl-fox-twin": "consent to access-control withdrawn"}
    deleted = audit_events(live_server, "pending-probe.deleted", closer)
    assert [e["reason"] for e in deleted if e["identification_id"] == ident] == [
        "identification closed: no candidate is eligible any more"
    ]
