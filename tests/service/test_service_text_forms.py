"""Text typed in another Unicode form, over real HTTP: the service accepts and refuses
what the library does (its limits count characters of the NFC form) and finds what
was recorded however the search is typed."""

from __future__ import annotations

import unicodedata

from .conftest import LiveServer, enrolled_subject, photo
from .test_console_edges import csrf_of, logged_in

LETTER = "\u00e9"  # é: one character composed, two code points decomposed


def test_a_case_reference_is_as_long_in_any_form_as_the_library_allows(
    live_server: LiveServer,
) -> None:
    enrolled_subject(live_server, "enroller-text", "text-hu")
    composed = LETTER * 200
    decomposed = unicodedata.normalize("NFD", composed)  # 400 code points
    with live_server.client("operator-text") as client:
        def identify(case_ref: str) -> dict[str, object]:
            response = client.post(
                "/v1/identify", data={"purpose": "access-control", "case_ref": case_ref},
                files={"image": ("p.jpg", photo("Hu_Jintao", 2).read_bytes(), "image/jpeg")},
            )
            body: dict[str, object] = response.json()
            body["status_code"] = response.status_code
            return body

        found = identify(f" {decomposed} ")
        assert found["status_code"] == 200, found
        assert found["case_ref"] == composed
        too_long = identify(LETTER * 201)
        assert too_long["status_code"] == 422
        assert too_long["type"] == "/problems/invalid-parameter"
        assert "'case_ref' is at most 200 characters" in str(too_long["detail"])
        schema = client.get("/openapi.json").json()
    form = schema["components"]["schemas"]["Body_identify"]
    assert form["properties"]["case_ref"]["maxLength"] == 200  # the limit, not the bound


def test_a_subject_search_finds_an_accented_name_as_it_is_shown(
    live_server: LiveServer,
) -> None:
    with live_server.client("enroller-text") as client:
        created = client.post("/v1/subjects", json={"subject_id": "text-elodie",
                                                    "display_name": "\u00c9lodie Dupr\u00e9"})
        assert created.status_code == 201, created.text
        for typed in ("\u00c9lodie", "\u00e9lodie", unicodedata.normalize("NFD", "Dupr\u00e9")):
            found = client.get("/v1/subjects", params={"q": typed})
            assert found.status_code == 200, found.text
            assert [s["subject_id"] for s in found.json()["subjects"]] == ["text-elodie"], typed


def test_a_key_name_is_as_long_in_any_form_as_the_library_allows(
    live_server: LiveServer,
) -> None:
    composed = "Jos" + LETTER * 197  # 200 characters
    with live_server.client("admin") as admin:
        created = admin.post("/v1/keys", json={
            "role": "auditor", "name": unicodedata.normalize("NFD", composed)})
        assert created.status_code == 201, created.text
        assert created.json()["name"] == composed
        too_long = admin.post("/v1/keys", json={"role": "auditor", "name": composed + "s"})
        assert too_long.status_code == 422
        assert "'name' is at most 200 characters" in too_long.json()["detail"]
        revoked = admin.delete(f"/v1/keys/{created.json()['key_id']}")
        assert revoked.status_code == 200, revoked.text


def test_the_console_takes_a_case_reference_in_any_form_as_the_api_does(
    live_server: LiveServer,
) -> None:
    enrolled_subject(live_server, "enroller-text", "text-hu-console")
    decomposed = unicodedata.normalize("NFD", LETTER * 200)
    with logged_in(live_server, "operator-text") as browser:
        page = browser.post(
            "/console/identify",
            files={"image": ("p.jpg", photo("Hu_Jintao", 3).read_bytes(), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": decomposed,
                  "csrf": csrf_of(browser, "/console/identify")},
        )
    assert page.status_code == 200, page.text[:2000]
    assert f"case {LETTER * 200}, purpose access-control" in page.text


def test_a_pasted_evidence_digest_with_outer_spaces_is_taken_as_everywhere(
    live_server: LiveServer,
) -> None:
    with live_server.client("enroller-text") as client:
        assert client.post("/v1/subjects", json={"subject_id": "text-digest"}).status_code == 201
        granted = client.post("/v1/subjects/text-digest/consents", json={
            "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": "form-digest", "evidence_sha256": f" {'AB' * 32}\n",
            "notice_version": "2026-01"})
        assert granted.status_code == 201, granted.text
        assert granted.json()["evidence_sha256"] == "ab" * 32
        bad = client.post("/v1/subjects/text-digest/consents", json={
            "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": "form-digest-2", "evidence_sha256": "xy" * 32,
            "notice_version": "2026-01"})
        assert bad.status_code == 422 and "64 hex digits" in bad.json()["detail"]
