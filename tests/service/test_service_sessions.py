"""Console sessions, failed-authentication throttles, refusal floods and policy changes,
on a server of their own (its throttles are tight, and the tests stop and restart it).

The tests run in file order: sessions first (with valid keys), then the floods and
throttles that block the loopback address, then the restart.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.gallery import Gallery, GalleryConfig, find_config
from facetrust.service import Role

from .conftest import LiveServer, launch_server, start_server, stop_server
from .test_service_http import assert_problem

pytestmark = [pytest.mark.service, pytest.mark.slow]  # a server of its own, restarted

KEYS = {"auditor": Role.AUDITOR, "admin": Role.ADMIN, "operator": Role.OPERATOR,
        "victim": Role.AUDITOR, "revoked": Role.AUDITOR}
FAILURE_BURST = 3
ENV = {"FACETRUST_SERVICE_AUTH_FAILURE_BURST": str(FAILURE_BURST),
       "FACETRUST_SERVICE_AUTH_FAILURES_PER_MINUTE": "1"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("guarded-gallery"), KEYS, ENV)
    yield server
    if server.process.poll() is None:
        stop_server(server)


def log_in(browser: httpx.Client, key: str) -> httpx.Response:
    form = browser.get("/console/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    return browser.post("/console/login", data={"api_key": key, "login_csrf": token[1]})


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1]


def gallery_events(server: LiveServer, kind: str) -> list[Any]:
    """Events read with the library from the stopped server's gallery."""
    config = GalleryConfig.load(find_config(str(server.folder)))
    with Gallery.open(config) as gallery:
        return list(gallery.audit.events(kind=kind))


def test_the_session_cookie_is_a_random_token_not_the_key(guarded: LiveServer) -> None:
    key = guarded.keys["auditor"]
    with httpx.Client(base_url=guarded.url) as browser:
        assert log_in(browser, key).status_code == 303
        token = browser.cookies["facetrust_session"]
        assert token != key and key not in token
        page = browser.get("/console/audit")
        assert page.status_code == 200
    # The cookie is no API key, and the key file holds only its hash.
    assert_problem(httpx.get(f"{guarded.url}/v1/me",
                             headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")
    with sqlite3.connect(guarded.folder / "api-keys.db") as db:
        stored = [row[0] for row in db.execute("SELECT token_sha256 FROM console_sessions")]
    assert token not in stored and len(stored) >= 1
    assert token.encode() not in (guarded.folder / "api-keys.db").read_bytes()


def test_logout_ends_the_session_on_the_server(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        log_in(browser, guarded.keys["auditor"])
        stolen = browser.cookies["facetrust_session"]
        page = browser.get("/console/audit")
        assert browser.post("/console/logout", data={"csrf": csrf_of(page)}).status_code == 303
    with httpx.Client(base_url=guarded.url, cookies={"facetrust_session": stolen}) as replay:
        response = replay.get("/console/audit")
    assert response.status_code == 303 and response.headers["location"] == "/console/login"


def test_each_login_has_its_own_csrf_token(guarded: LiveServer) -> None:
    tokens = []
    for _ in range(2):
        with httpx.Client(base_url=guarded.url) as browser:
            log_in(browser, guarded.keys["auditor"])
            tokens.append(csrf_of(browser.get("/console/audit")))
    assert tokens[0] != tokens[1]
    with httpx.Client(base_url=guarded.url) as browser:  # one session's token fails another's
        log_in(browser, guarded.keys["auditor"])
        assert browser.post("/console/logout", data={"csrf": tokens[0]}).status_code == 403


def test_revoking_a_key_ends_its_console_sessions(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        log_in(browser, guarded.keys["revoked"])
        assert browser.get("/console/audit").status_code == 200
        with guarded.client("admin") as admin:
            revoked = admin.delete(f"/v1/keys/{guarded.key_ids['revoked']}")
        assert revoked.status_code == 200
        after = browser.get("/console/audit")
    assert after.status_code == 303 and after.headers["location"] == "/console/login"


def test_logins_and_logouts_are_audited(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        log_in(browser, guarded.keys["victim"])
        browser.post("/console/logout", data={"csrf": csrf_of(browser.get("/console/audit"))})
    victim = f"key:{guarded.key_ids['victim']}"
    with guarded.client("auditor") as auditor:
        logins = auditor.get("/v1/audit/events",
                             params={"kind": "console.login", "actor": victim}).json()["events"]
        logouts = auditor.get("/v1/audit/events",
                              params={"kind": "console.logout", "actor": victim}).json()["events"]
    assert len(logins) == 1 and len(logouts) == 1


def test_a_new_log_in_ends_the_session_it_replaces(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        log_in(browser, guarded.keys["auditor"])
        first = browser.cookies["facetrust_session"]
        log_in(browser, guarded.keys["admin"])  # someone else, same browser, no log-out
        assert browser.get("/console/keys").status_code == 200
    with httpx.Client(base_url=guarded.url, cookies={"facetrust_session": first}) as replay:
        response = replay.get("/console/audit")
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    auditor = f"key:{guarded.key_ids['auditor']}"
    with guarded.client("auditor") as client:
        ended = client.get("/v1/audit/events",
                           params={"kind": "console.logout", "actor": auditor}).json()["events"]
    assert [e.get("reason") for e in ended][-1:] == ["replaced by a new log-in"]


def test_a_flood_of_anonymous_refusals_is_one_event_with_a_count(guarded: LiveServer) -> None:
    flood = 30
    with httpx.Client(base_url=guarded.url) as anonymous:
        for _ in range(flood):
            response = anonymous.post(
                "/v1/identify", data={"purpose": "access-control", "case_ref": "FLOOD"}
            )
            assert_problem(response, 401, "unauthorized")
    with guarded.client("auditor") as auditor:
        written = auditor.get("/v1/audit/events", params={
            "kind": "service.refused", "actor": "anonymous", "limit": "1000"}).json()["events"]
    written = [e for e in written if e["route"] == "/v1/identify"]
    assert 1 <= len(written) <= 10  # five per minute in full (the flood may span two minutes)
    # The rest is counted, and written when its minute is over (here: at shutdown).
    stop_server(guarded)
    repeated = [e for e in gallery_events(guarded, "service.refused.repeated")
                if e.fields["route"] == "/v1/identify"]
    assert sum(e.fields["count"] for e in repeated) + len(written) == flood
    assert all(e.actor == "anonymous" and e.fields["status"] == 401 for e in repeated)


def test_a_policy_change_is_recorded_at_the_next_start(guarded: LiveServer) -> None:
    if guarded.process.poll() is None:
        stop_server(guarded)
    restarted = launch_server(
        guarded.folder, guarded.keys, guarded.key_ids,
        {**ENV, "FACETRUST_SERVICE_IDENTIFY_BURST": "3"},
    )
    try:
        with restarted.client("auditor") as auditor:
            changes = auditor.get("/v1/audit/events",
                                  params={"kind": "policy.changed"}).json()["events"]
    finally:
        guarded.process = restarted.process  # the module fixture stops it
        guarded.url = restarted.url
    assert len(changes) == 2
    assert changes[-1]["changed"] == ["limits.identify_burst"]
    assert changes[-1]["previous"]["limits"]["identify_burst"] != 3
    assert changes[-1]["policy"]["limits"]["identify_burst"] == 3


def test_failed_keys_are_throttled_per_address_while_verified_keys_keep_working(
    guarded: LiveServer,
) -> None:
    with guarded.client("operator") as valid:
        assert valid.get("/v1/me").status_code == 200  # verified, so remembered
        wrong = guarded.keys["auditor"][:-4] + "AAAA"
        statuses = []
        for _ in range(FAILURE_BURST + 1):
            response = httpx.get(f"{guarded.url}/v1/me",
                                 headers={"Authorization": f"Bearer {wrong}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        # At most the burst of 401s (fewer if earlier tests failed from this address).
        assert statuses[:-1] == [401] * (len(statuses) - 1) and len(statuses) <= FAILURE_BURST + 1
        assert_problem(response, 429, "rate-limited")
        assert int(response.headers["retry-after"]) >= 1
        # Cheap refusals from a blocked address are 429 too, before any lookup.
        blocked = httpx.get(f"{guarded.url}/v1/me", headers={"Authorization": "Bearer nonsense"})
        assert_problem(blocked, 429, "rate-limited")
        assert valid.get("/v1/me").status_code == 200  # the verified key is not locked out


def test_failed_console_logins_are_throttled(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        for _ in range(FAILURE_BURST + 1):
            response = log_in(browser, "ft_0000000000000000_" + "A" * 43)
            if response.status_code != 401:
                break
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "Too many" in response.text and "facetrust_session" not in response.cookies


def test_server_log_has_no_keys_or_session_tokens(guarded: LiveServer) -> None:
    text = "".join(p.read_text() for p in Path(guarded.folder).glob("server-*.log"))
    assert all(key not in text for key in guarded.keys.values())
