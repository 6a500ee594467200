"""The service over real HTTP: a `facetrust serve` process on loopback, driven with httpx."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from PIL import Image

from facetrust.matching import get_operating_point

from .conftest import (
    IDENTIFY_BURST,
    MAX_BODY_BYTES,
    LiveServer,
    add_consented_subject,
    enrol,
    photo,
    two_people_photo,
)

PEOPLE = {"http-colin": "Colin_Powell", "http-kofi": "Kofi_Annan", "http-serena": "Serena_Williams"}


def files(**paths: Path) -> dict[str, tuple[str, bytes, str]]:
    return {name: (p.name, p.read_bytes(), "image/jpeg") for name, p in paths.items()}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
def enrolled(live_server: LiveServer) -> dict[str, dict[str, object]]:
    """Three consented subjects, each enrolled from their first sample photo."""
    results = {}
    with live_server.client("enroller") as client:
        for subject_id, name in PEOPLE.items():
            add_consented_subject(client, subject_id)
            response = enrol(client, subject_id, photo(name, 1))
            assert response.status_code == 201, response.text
            results[subject_id] = response.json()
    return results


def test_health_readiness_and_problem_catalogue_are_public(live_server: LiveServer) -> None:
    with live_server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}  # nothing more, no key
        types = [p["type"] for p in client.get("/problems").json()["problems"]]
    assert len(types) == len(set(types))
    expected = {"/problems/no-face-found", "/problems/rate-limited", "/problems/forbidden"}
    assert expected <= set(types)


def test_enrolment_shows_the_detected_face_and_its_quality(
    enrolled: dict[str, dict[str, object]],
) -> None:
    result = enrolled["http-colin"]
    face = result["face"]
    assert isinstance(face, dict)
    assert face["quality"]["passed"] is True and face["quality"]["reasons"] == []
    box = face["box"]
    assert 0 <= box["left"] < box["right"] <= 250 and 0 <= box["top"] < box["bottom"] <= 250
    assert len(result["template_ids"]) == 1 and result["model_id"] == "dlib-resnet-v1"


def test_identify_ranks_the_right_subject_first_and_requires_human_review(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    with live_server.client("operator") as client:
        response = client.post(
            "/v1/identify",
            files=files(image=photo("Colin_Powell", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-1", "k": "3"},
        )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["candidates"][0]["subject_id"] == "http-colin"
    assert result["candidates"][0]["distance"] <= result["threshold"]
    assert result["requires_human_review"] is True and "human" in result["notice"]
    assert result["actor"] == f"key:{live_server.key_ids['operator']}"
    assert result["case_ref"] == "CASE-1"


def test_identify_requires_purpose_and_case_reference(live_server: LiveServer) -> None:
    with live_server.client("operator") as client:
        no_case = client.post(
            "/v1/identify", files=files(image=photo("Colin_Powell", 2)),
            data={"purpose": "access-control"},
        )
        body = assert_problem(no_case, 422, "validation-error")
        assert ["body", "case_ref"] in [e["loc"] for e in body["errors"]]  # type: ignore[union-attr]
        bad_purpose = client.post(
            "/v1/identify", files=files(image=photo("Colin_Powell", 2)),
            data={"purpose": "marketing", "case_ref": "CASE-2"},
        )
        assert_problem(bad_purpose, 422, "invalid-parameter")


def test_two_reviewers_confirm_a_candidate(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    with (
        live_server.client("operator") as searcher,
        live_server.client("operator2") as one,
        live_server.client("operator3") as two,
    ):
        found = searcher.post(
            "/v1/identify", files=files(image=photo("Kofi_Annan", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-3"},
        ).json()
        assert found["candidates"][0]["subject_id"] == "http-kofi"
        path = f"/v1/identifications/{found['identification_id']}/reviews"
        own = searcher.post(path, json={"subject_id": "http-kofi"})
        assert_problem(own, 403, "review-not-allowed")  # the searcher is not a reviewer
        first = one.post(path, json={"subject_id": "http-kofi"}).json()
        assert first["status"] == "pending"
        assert_problem(one.post(path, json={"subject_id": "http-kofi"}), 409, "review-closed")
        second = two.post(path, json={"subject_id": "http-kofi", "note": "checked ID card"}).json()
        assert second["status"] == "confirmed"
        late = one.post(path, json={"subject_id": "http-kofi", "decision": "reject"})
        assert_problem(late, 409, "review-closed")  # decisions are final
        unknown = one.post("/v1/identifications/nope/reviews", json={"subject_id": "http-kofi"})
        assert_problem(unknown, 404, "unknown-identification")
    assert set(second["confirmed_by"]) == {
        f"key:{live_server.key_ids['operator2']}", f"key:{live_server.key_ids['operator3']}"
    }


def test_verify_two_photos_side_by_side(live_server: LiveServer) -> None:
    with live_server.client("operator") as client:
        same = client.post(
            "/v1/verify",
            files=files(image_a=photo("Hu_Jintao", 1), image_b=photo("Hu_Jintao", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-4"},
        ).json()
        other = client.post(
            "/v1/verify",
            files=files(image_a=photo("Hu_Jintao", 1), image_b=photo("Jennifer_Lopez", 1)),
            data={"purpose": "access-control", "case_ref": "CASE-4"},
        ).json()
    assert same["match"] is True and same["distance"] <= same["threshold"]
    assert other["match"] is False and other["distance"] > other["threshold"]
    assert same["operating_point"] == get_operating_point().name and len(same["faces"]) == 2


def test_verify_against_an_enrolled_subject(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    with live_server.client("operator") as client:
        response = client.post(
            "/v1/subjects/http-serena/verify",
            files=files(image=photo("Serena_Williams", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-5"},
        )
        refused = client.post(
            "/v1/subjects/http-serena/verify",
            files=files(image=photo("Serena_Williams", 2)),
            data={"purpose": "boarding", "case_ref": "CASE-5"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["match"] is True
    # the same answer as for a subject who does not exist (see test_service_least_privilege)
    assert_problem(refused, 404, "unknown-subject")


def test_bad_images_are_problems_with_stable_types(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    with live_server.client("enroller") as client:
        junk = client.post(
            "/v1/subjects/http-colin/enrolments",
            files={"photo": ("junk.jpg", b"\x00" * 500, "image/jpeg")},
        )
        assert_problem(junk, 415, "not-an-image")
        two_people = two_people_photo(live_server.folder)
        assert_problem(enrol(client, "http-colin", two_people), 422, "multiple-faces")
        bomb = io.BytesIO()
        Image.new("L", (6000, 6000)).save(bomb, format="PNG")  # 36 Mpx, ~40 kB
        assert len(bomb.getvalue()) < MAX_BODY_BYTES
        big = client.post(
            "/v1/subjects/http-colin/enrolments",
            files={"photo": ("bomb.png", bomb.getvalue(), "image/png")},
        )
        detail = str(assert_problem(big, 413, "image-too-large")["detail"])
        # what the caller can do; raising the cap is the operator's, not said to the caller
        assert "pixel cap" in detail and "send it again" in detail
        assert "Settings" not in detail and "FACETRUST_" not in detail
        nobody = enrol(client, "http-nobody", photo("Colin_Powell", 3))
        assert_problem(nobody, 404, "unknown-subject")


def test_enrolment_without_consent_is_refused_and_audited(live_server: LiveServer) -> None:
    with live_server.client("enroller") as client:
        assert client.post("/v1/subjects", json={"subject_id": "http-noconsent"}).status_code == 201
        assert_problem(enrol(client, "http-noconsent", photo("Vicente_Fox", 1)), 409,
                       "consent-required")
    with live_server.client("auditor") as auditor:
        events = auditor.get(
            "/v1/audit/events", params={"kind": "enrol.refused",
                                        "actor": f"key:{live_server.key_ids['enroller']}"}
        ).json()["events"]
    assert any(e["problem"] == "/problems/consent-required" and e["status"] == 409
               and e["subject_ids"] == ["http-noconsent"] for e in events)


def test_body_over_the_cap_is_refused_before_it_is_read(live_server: LiveServer) -> None:
    big = b"\xff" * (MAX_BODY_BYTES + 1)
    with live_server.client("enroller") as client:
        declared = client.post(
            "/v1/subjects/http-colin/enrolments", files={"photo": ("big.jpg", big, "image/jpeg")}
        )
        assert_problem(declared, 413, "body-too-large")

        def chunks() -> object:
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b"x" * 65536

        streamed = client.post(
            "/v1/subjects", content=chunks(),  # type: ignore[arg-type]
            headers={"content-type": "application/json"},
        )
        assert "content-length" not in streamed.request.headers
        assert_problem(streamed, 413, "body-too-large")


def test_identify_is_rate_limited_per_key(live_server: LiveServer) -> None:
    statuses = []
    with live_server.client("operator-limited") as client:
        for _ in range(IDENTIFY_BURST + 1):
            response = client.post(
                "/v1/identify", files={"image": ("x.jpg", b"not an image", "image/jpeg")},
                data={"purpose": "access-control", "case_ref": "CASE-RL"},
            )
            statuses.append(response.status_code)
        assert statuses[:IDENTIFY_BURST] == [415] * IDENTIFY_BURST
        assert_problem(response, 429, "rate-limited")
        assert int(response.headers["retry-after"]) >= 1
    with live_server.client("operator") as other:  # another key still has its tokens
        response = other.post(
            "/v1/identify", files={"image": ("x.jpg", b"not an image", "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "CASE-RL"},
        )
        assert response.status_code == 415


def test_every_biometric_request_is_audited_with_the_key_id(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    enroller = f"key:{live_server.key_ids['enroller']}"
    operator = f"key:{live_server.key_ids['operator-audited']}"
    with live_server.client("operator-audited") as client:
        response = client.post(
            "/v1/identify", files=files(image=photo("Serena_Williams", 2)),
            data={"purpose": "access-control", "case_ref": "CASE-AUDITED"},
        )
    assert response.status_code == 200, response.text
    with live_server.client("auditor") as auditor:
        enrolments = auditor.get(
            "/v1/audit/events", params={"kind": "enrol", "actor": enroller}
        ).json()["events"]
        identified = auditor.get(
            "/v1/audit/events", params={"kind": "identify", "actor": operator}
        ).json()["events"]
    assert {e["subject_ids"][0] for e in enrolments} >= set(PEOPLE)
    assert len(identified) == 1, identified
    event = identified[0]
    assert event["actor"] == operator
    assert event["case_ref"] == "CASE-AUDITED" and event["purpose"] == "access-control"
    assert event["identification_id"] == response.json()["identification_id"]
    assert event["subject_ids"] == ["http-serena"]


def test_audit_chain_verifies_and_exports_every_event(
    live_server: LiveServer, enrolled: dict[str, dict[str, object]]
) -> None:
    with live_server.client("auditor") as auditor:
        report = auditor.get("/v1/audit/verify").json()
        head = auditor.get("/v1/audit/head").json()
        export = auditor.get("/v1/audit/export")
        anchored = auditor.get(
            "/v1/audit/verify", params={"expect_seq": head["seq"], "expect_mac": head["mac"]}
        ).json()
    assert report["ok"] is True and report["events_checked"] >= head["seq"] >= 1
    assert anchored["ok"] is True
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [e["seq"] for e in lines[: head["seq"]]] == list(range(1, head["seq"] + 1))


def test_auditor_reads_reports_and_nothing_biometric(live_server: LiveServer) -> None:
    with live_server.client("auditor") as auditor:
        listed = auditor.get("/v1/reports").json()["reports"]
        assert [r["name"] for r in listed] == ["lfw-verification.json"]
        report = auditor.get("/v1/reports/lfw-verification.json").json()
        assert report["protocol"] == "LFW View 2"
        assert_problem(auditor.get("/v1/reports/..%2Fgallery.key"), 404, "not-found")
        assert_problem(auditor.get("/v1/subjects"), 403, "forbidden")
        assert_problem(
            auditor.post("/v1/identify", data={"purpose": "access-control", "case_ref": "x"}),
            403, "forbidden",
        )


def test_erasure_removes_the_subject_from_search(live_server: LiveServer) -> None:
    with live_server.client("enroller") as enroller:
        add_consented_subject(enroller, "http-venus")
        assert enrol(enroller, "http-venus", photo("Venus_Williams", 1)).status_code == 201
        erased = enroller.delete("/v1/subjects/http-venus", params={"reason": "request 17"})
        assert erased.status_code == 200 and erased.json()["key_destroyed"] is True
        assert_problem(enroller.get("/v1/subjects/http-venus"), 404, "unknown-subject")
    with live_server.client("admin") as admin:
        swept = admin.post("/v1/retention/sweep")
        assert swept.status_code == 200 and "http-venus" not in swept.json()["erased"]


def test_subjects_are_searched_a_page_at_a_time(live_server: LiveServer) -> None:
    with live_server.client("enroller") as client:
        for number in range(5):
            assert client.post("/v1/subjects", json={
                "subject_id": f"http-page-{number}",
                "display_name": "Amara Okafor" if number == 3 else None,
            }).status_code == 201
        seen: list[str] = []
        after = ""
        for _ in range(3):
            answer = client.get("/v1/subjects", params={"q": "HTTP-PAGE", "after": after,
                                                         "limit": 2})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert len(page["subjects"]) <= 2
            seen += [s["subject_id"] for s in page["subjects"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert seen == [f"http-page-{n}" for n in range(5)]  # by increasing id, none twice
        assert page["next_after"] is None
        named = client.get("/v1/subjects", params={"q": "okafor"}).json()
        assert [s["subject_id"] for s in named["subjects"]] == ["http-page-3"]
        assert named["next_after"] is None
        for limit in ("0", "501", "many"):
            assert_problem(client.get("/v1/subjects", params={"limit": limit}), 422,
                           "validation-error")
        assert_problem(client.get("/v1/subjects", params={"q": "x" * 201}), 422,
                       "validation-error")


def test_reading_a_subject_or_its_consents_is_an_audited_view(live_server: LiveServer) -> None:
    with live_server.client("enroller") as client:
        add_consented_subject(client, "http-viewed")  # no face enrolled: shared searches unchanged
        subject = client.get("/v1/subjects/http-viewed").json()
        history = client.get("/v1/subjects/http-viewed/consents").json()
        assert_problem(client.get("/v1/subjects/http-nobody/consents"), 404, "unknown-subject")
    assert subject["subject_id"] == "http-viewed" and subject["template_count"] == 0
    assert subject["photos_kept"] == 0
    assert [c["purposes"] for c in history["consents"]] == [["access-control"]]
    with live_server.client("auditor") as auditor:
        views = auditor.get("/v1/audit/events", params={
            "kind": "subject.view", "subject": "http-viewed"}).json()["events"]
    assert [v["seq"] for v in views] == [subject["audit_seq"], history["audit_seq"]]
    assert {v["actor"] for v in views} == {f"key:{live_server.key_ids['enroller']}"}


def test_keys_are_stored_hashed_and_revocation_is_immediate(live_server: LiveServer) -> None:
    with live_server.client("admin-revoker") as admin:
        created = admin.post("/v1/keys", json={"role": "auditor", "name": "temp auditor"})
        assert created.status_code == 201
        key, key_id = created.json()["key"], created.json()["key_id"]
        listed = admin.get("/v1/keys").json()["keys"]
        assert key_id in {k["key_id"] for k in listed}
        assert all("key" not in k for k in listed)
        with httpx.Client(base_url=live_server.url,
                          headers={"Authorization": f"Bearer {key}"}) as temp:
            assert temp.get("/v1/me").json()["role"] == "auditor"
            assert admin.delete(f"/v1/keys/{key_id}").json()["revoked_at"]
            assert_problem(temp.get("/v1/me"), 401, "unauthorized")
    secret = key.split("_", 2)[2]
    with sqlite3.connect(live_server.folder / "api-keys.db") as db:
        stored = db.execute("SELECT key_hash FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    assert stored[0].startswith("$argon2id$") and secret not in stored[0]
    assert secret.encode() not in (live_server.folder / "api-keys.db").read_bytes()


def test_unknown_and_malformed_keys_are_401(live_server: LiveServer) -> None:
    real = live_server.keys["auditor"]
    wrong_secret = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for presented in ("nonsense", "ft_0000000000000000_secret", wrong_secret):
        response = httpx.get(f"{live_server.url}/v1/me",
                             headers={"Authorization": f"Bearer {presented}"})
        assert_problem(response, 401, "unauthorized")
    assert_problem(httpx.get(f"{live_server.url}/v1/me"), 401, "unauthorized")


def test_metrics_count_requests_by_route_in_prometheus_format(live_server: LiveServer) -> None:
    with live_server.client() as client:
        client.get("/healthz")
        text = client.get("/metrics").text
    assert "# TYPE facetrust_http_requests_total counter" in text
    assert 'facetrust_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    bucket = (
        'facetrust_http_request_duration_seconds_bucket{method="GET",route="/healthz",le="+Inf"}'
    )
    assert bucket in text
    assert "key:" not in text and "http-colin" not in text


def test_console_pages_are_counted_and_logged_under_their_own_path(
    live_server: LiveServer,
) -> None:
    """A console page is labelled /console/..., never as a bare /login that reads like
    another route (the console's pages are a router nested under /console)."""
    with live_server.client() as client:
        assert client.get("/console/login").status_code == 200
        text = client.get("/metrics").text
    assert 'route="/console/login",status="200"' in text
    assert 'route="/login"' not in text
    logged = live_server.log.read_text(errors="replace")
    assert "GET /console/login HTTP/1.1" in logged


@pytest.mark.parametrize("subject_id", ["a/b", "../x", "evil\u202egpj", " kofi"])
def test_the_service_refuses_ids_outside_the_grammar_as_the_library_does(
    live_server: LiveServer, subject_id: str
) -> None:
    with live_server.client("enroller") as client:
        refused = client.post("/v1/subjects", json={"subject_id": subject_id})
        problem = assert_problem(refused, 422, "invalid-parameter")
        assert "letters A-Z and a-z, digits, '.', '_' and '-'" in str(problem["detail"])
        hidden = client.post(
            "/v1/subjects", json={"subject_id": "http-hidden", "display_name": "Kofi\u202eA"}
        )
        assert "U+202E" in str(assert_problem(hidden, 422, "invalid-parameter")["detail"])
        listed = client.get("/v1/subjects").json()["subjects"]
    assert {s["subject_id"] for s in listed}.isdisjoint({subject_id, "http-hidden"})
