"""The console's audit trail over plain HTTP: only the auditor pages and exports it."""

from __future__ import annotations

import json

import httpx

from facetrust.service import Role

from .conftest import LiveServer
from .test_service_roles import ROLE_KEYS, log_in


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
