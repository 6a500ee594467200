"""The console's audit trail over plain HTTP: only the auditor pages and exports it."""

from __future__ import annotations

import json

import httpx

from facetrust.service import ApiKey, Role, SqliteApiKeyStore
from facetrust.text import hidden_characters

from .conftest import LiveServer, photo
from .test_service_roles import ROLE_KEYS, log_in

T0 = "2026-01-01T00:00:00+00:00"


def test_only_the_auditor_downloads_the_filtered_trail(live_server: LiveServer) -> None:
    for role, key_name in ROLE_KEYS.items():
        with httpx.Client(base_url=live_server.url) as browser:
            log_in(browser, live_server.keys[key_name])
            response = browser.get(
                "/console/audit/export", params={"since": "2000-01-01", "until": "2100-01-01"}
            )
        if role is not Role.AUDITOR:
            assert response.status_code == 403, role
            assert response.headers["content-type"].startswith("text/html"), role
            continue
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        seqs = [json.loads(line)["seq"] for line in response.text.splitlines()]
        assert seqs[:1] == [1] and seqs == sorted(seqs)
    with httpx.Client(base_url=live_server.url) as anonymous:
        response = anonymous.get("/console/audit/export")
    assert response.headers["location"] == "/console/login"


def test_a_bad_export_range_is_an_html_page(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as browser:
        log_in(browser, live_server.keys["auditor"])
        response = browser.get("/console/audit/export", params={"until": "soon"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "The &#39;until&#39; must be an ISO 8601 date or time" in response.text


def test_text_a_request_carried_is_refused_or_shown_never_obeyed(live_server: LiveServer) -> None:
    # a direction override, a terminal escape (clear screen) and a line separator
    sneaky = "CASE-1\u202e7-ESAC\x1b[2J\u2028x"
    image = {"image": ("p.jpg", photo("Colin_Powell").read_bytes(), "image/jpeg")}
    with live_server.client("operator-hidden-text") as operator:
        refused = operator.post("/v1/identify", files=image,
                                data={"purpose": "boarding", "case_ref": sneaky})
    assert refused.status_code == 422, refused.text
    assert "U+202E" in refused.json()["detail"] and "\u202e" not in refused.text
    # refused before the gallery saw it (a well-formed key no one holds: a malformed one
    # is refused before the body is read): audited with the fields as sent
    with live_server.client() as anonymous:
        unknown = anonymous.post("/v1/identify", files=image,
                                 headers={"Authorization": f"Bearer ft_{'0' * 16}_{'A' * 43}"},
                                 data={"purpose": sneaky, "case_ref": sneaky})
    assert unknown.status_code == 401
    with live_server.client("auditor") as auditor:
        export = auditor.get("/v1/audit/export", params={"kind": "service.refused"})
    assert hidden_characters(export.text.replace("\n", "")) == []
    events = [json.loads(line) for line in export.text.splitlines()]
    assert any(e["purpose"] == sneaky and e["case_ref"] == sneaky for e in events)
    with httpx.Client(base_url=live_server.url) as browser:
        log_in(browser, live_server.keys["auditor"])
        page = browser.get("/console/audit", params={"kind": "service.refused"})
    assert page.status_code == 200
    assert "CASE-1\u27e8U+202E\u27e97-ESAC\u27e8U+001B\u27e9[2J\u27e8U+2028\u27e9x" in page.text
    assert hidden_characters(page.text.replace("\n", "")) == []


def test_every_console_page_shows_hidden_characters_of_older_data(
    live_server: LiveServer,
) -> None:
    # A key named before names were checked (written to the key store directly, as an
    # older version could): its direction override is shown, not obeyed, on the keys page.
    store = SqliteApiKeyStore(live_server.folder / "api-keys.db")
    try:
        # revoked, so that its (made-up) seal does not stop a restart of the shared server
        store.insert(ApiKey("0ld0ld0ld0ld0ld0", Role.OPERATOR, "ops\u202egnol", T0, "cli:old",
                            revoked_at=T0), "unused-hash", "0" * 64)
    finally:
        store.close()
    with httpx.Client(base_url=live_server.url) as browser:
        log_in(browser, live_server.keys["admin"])
        page = browser.get("/console/keys")
    assert page.status_code == 200
    assert "ops\u27e8U+202E\u27e9gnol" in page.text
    assert hidden_characters(page.text.replace("\n", "")) == []
