"""The role matrix: every API endpoint x every role (and no key) on the live server.

A role listed for an operation in the permission table is never refused with
401/403; every other role gets 403 ``forbidden``; without a key, 401. A refusal
of a biometric endpoint (verify, identify, enrol, review) is also an audit
event: ``service.refused`` with the key (or ``anonymous``), route and status.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from facetrust.service import PERMISSIONS, PUBLIC, Role, ServiceSettings, create_app
from facetrust.service.refusals import BIOMETRIC_ROUTES

from .conftest import LiveServer

ROLE_KEYS = {Role.ENROLLER: "enroller", Role.OPERATOR: "operator-schema",
             Role.AUDITOR: "auditor", Role.ADMIN: "admin"}

#: A harmless request for each operation: path parameters point at nothing real,
#: bodies are empty, so an allowed call ends in 2xx, 404 or 422 and changes nothing
#: that other tests rely on.
PATH_VALUES = {"subject_id": "matrix-nobody", "identification_id": "matrix-none",
               "key_id": "0000000000000000", "name": "missing.json"}


def api_routes() -> list[tuple[str, str, str]]:
    """(operation id, method, path) of every API endpoint, from the app's OpenAPI document."""
    spec = create_app(ServiceSettings()).openapi()
    return [
        (operation["operationId"], method.upper(), path)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


ROUTES = api_routes()


def test_every_route_is_in_the_permission_table_and_every_entry_has_a_route() -> None:
    operations = {op for op, _, _ in ROUTES}
    assert operations == set(PERMISSIONS) | PUBLIC
    assert not set(PERMISSIONS) & PUBLIC


def call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    url = path.format(**PATH_VALUES)
    kwargs: dict[str, Any] = {}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, url, **kwargs)


def refusals(server: LiveServer, actor: str, route: str, status: int) -> int:
    """How many ``service.refused`` events ``actor`` has for ``route`` and ``status``."""
    with server.client("auditor") as auditor:
        events = auditor.get("/v1/audit/events", params={
            "kind": "service.refused", "actor": actor, "limit": "1000"}).json()["events"]
    return sum(e.get("route") == route and e.get("status") == status for e in events)


@pytest.mark.parametrize("operation,method,path", ROUTES, ids=[r[0] for r in ROUTES])
def test_role_matrix(live_server: LiveServer, operation: str, method: str, path: str) -> None:
    biometric = (method, path) in BIOMETRIC_ROUTES
    for role, key_name in ROLE_KEYS.items():
        actor = f"key:{live_server.key_ids[key_name]}"
        before = refusals(live_server, actor, path, 403) if biometric else 0
        with live_server.client(key_name) as client:
            response = call(client, method, path)
        if operation in PUBLIC or role in PERMISSIONS[operation]:
            assert response.status_code not in (401, 403), (role, response.text)
            assert response.status_code < 500, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["type"] == "/problems/forbidden"
            if biometric:
                assert refusals(live_server, actor, path, 403) == before + 1, role
    with live_server.client() as anonymous:
        response = call(anonymous, method, path)
    if operation in PUBLIC:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        if biometric:  # anonymous refusals may be counted rather than written in full
            assert refusals(live_server, "anonymous", path, 401) >= 1


def test_the_biometric_routes_of_the_refusal_audit_exist() -> None:
    api = {(method, path) for _, method, path in ROUTES}
    assert {r for r in BIOMETRIC_ROUTES if r[1].startswith("/v1/")} <= api


def log_in(browser: httpx.Client, key: str) -> httpx.Response:
    form = browser.get("/console/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    response = browser.post("/console/login", data={"api_key": key, "login_csrf": token[1]})
    assert response.status_code == 303, response.text
    return response


def test_console_login_needs_the_form_token(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as browser:
        forged = browser.post("/console/login", data={"api_key": live_server.keys["auditor"]})
        assert forged.status_code == 403 and "facetrust_session" not in forged.cookies
        cookie = log_in(browser, live_server.keys["auditor"]).headers["set-cookie"].lower()
        assert "facetrust_session=" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie and "path=/console" in cookie
        page = browser.get("/console/audit")
        assert page.status_code == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        assert browser.post("/console/logout", data={"csrf": "forged"}).status_code == 403
        assert browser.post("/console/logout", data={"csrf": csrf[1]}).status_code == 303


@pytest.mark.parametrize(
    "page,allowed",
    [
        ("/console/consent", {Role.ENROLLER}),
        ("/console/enrol", {Role.ENROLLER}),
        ("/console/subjects", {Role.ENROLLER}),
        ("/console/verify-subject", {Role.OPERATOR}),
        ("/console/verify", {Role.OPERATOR}),
        ("/console/identify", {Role.OPERATOR}),
        ("/console/audit", {Role.AUDITOR}),
        ("/console/reports", {Role.AUDITOR}),
        ("/console/keys", {Role.ADMIN}),
    ],
)
def test_console_pages_follow_the_same_table(
    live_server: LiveServer, page: str, allowed: set[Role]
) -> None:
    for role, key_name in ROLE_KEYS.items():
        with httpx.Client(base_url=live_server.url) as browser:
            log_in(browser, live_server.keys[key_name])
            home = browser.get("/console/")
            response = browser.get(page)
        assert response.status_code == (200 if role in allowed else 403), role
        assert (f'href="{page}"' in home.text) == (role in allowed), role
    with httpx.Client(base_url=live_server.url) as anonymous:
        assert anonymous.get(page).headers["location"] == "/console/login"
