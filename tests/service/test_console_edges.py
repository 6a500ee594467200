"""The console keeps the API's promises at its edges, for a careless or hostile user:
photos over the caps are refused before any preview is made, repeated photo parts are
refused, a role refusal is audited as the API's is, a rate-limited page says when to
retry, and a bad number in an address is a page, not a crash."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from .conftest import LiveServer, enrolled_subject, photo
from .test_service_trust import actor, audit_events

pytestmark = pytest.mark.service

PREVIEW = "data:image/jpeg;base64,"


@contextmanager
def logged_in(server: LiveServer, key: str) -> Iterator[httpx.Client]:
    """A cookie-keeping client with a console session of ``key``."""
    with httpx.Client(base_url=server.url, timeout=60.0) as browser:
        login = browser.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', login.text)
        assert token is not None
        answer = browser.post("/console/login",
                              data={"api_key": server.keys[key], "login_csrf": token[1]})
        assert answer.status_code == 303, answer.text
        yield browser


def csrf_of(browser: httpx.Client, page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', browser.get(page).text)
    assert found is not None
    return found[1]


@pytest.fixture(scope="module")
def subject(live_server: LiveServer) -> str:
    """One consented subject enrolled from one photo."""
    return enrolled_subject(live_server, "enroller-console-edges", "edges-hu")


def huge_png() -> bytes:
    """36 million grey pixels (over the 25-million pixel cap) in a few hundred KB."""
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("key", "form", "field", "data"), [
    ("operator-console-edges", "/console/verify-subject", "photo",
     {"subject_id": "edges-hu", "purpose": "access-control", "case_ref": "CASE-EDGE"}),
    ("operator-console-edges", "/console/identify", "image",
     {"purpose": "access-control", "case_ref": "CASE-EDGE"}),
    ("enroller-console-edges", "/console/enrol", "photo", {"subject_id": "edges-hu"}),
])
def test_a_photo_over_the_pixel_cap_is_refused_without_being_previewed(
    live_server: LiveServer, subject: str, key: str, form: str, field: str,
    data: dict[str, str],
) -> None:
    with logged_in(live_server, key) as browser:
        response = browser.post(
            form, files={field: ("huge.png", huge_png(), "image/png")},
            data={**data, "csrf": csrf_of(browser, form)},
        )
    assert response.status_code == 413, response.text[:2000]
    assert "pixel cap" in response.text
    assert PREVIEW not in response.text  # the refused photo was never decoded for a preview


def test_a_rate_limited_console_check_says_when_to_retry_and_shows_no_photo(
    live_server: LiveServer, subject: str
) -> None:
    form = "/console/verify-subject"
    image = photo("Hu_Jintao", 2).read_bytes()
    data = {"subject_id": subject, "purpose": "access-control", "case_ref": "CASE-RL"}
    with logged_in(live_server, "operator-console-vs-limited") as browser:
        csrf = csrf_of(browser, form)
        answers = [browser.post(form, files={"photo": ("kofi.jpg", image, "image/jpeg")},
                                data={**data, "csrf": csrf}) for _ in range(21)]
    limited = answers[-1]
    assert [a.status_code for a in answers[:-1]].count(429) == 0
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert PREVIEW not in limited.text
    assert "verify subject requests" in limited.text  # words, not the operation's name
    assert PREVIEW in answers[0].text  # an answered check shows the photo it compared


def test_two_photos_in_one_console_search_are_refused(live_server: LiveServer) -> None:
    first, second = photo("Colin_Powell", 2), photo("Kofi_Annan", 2)
    with logged_in(live_server, "operator-console-edges") as browser:
        response = browser.post(
            "/console/identify",
            files=[("image", (first.name, first.read_bytes(), "image/jpeg")),
                   ("image", (second.name, second.read_bytes(), "image/jpeg"))],
            data={"purpose": "access-control", "case_ref": "CASE-TWO-C",
                  "csrf": csrf_of(browser, "/console/identify")},
        )
    assert response.status_code == 422
    assert "2 &#39;image&#39; parts" in response.text or "2 'image' parts" in response.text
    searched = audit_events(live_server, kind="identify",
                            actor=actor(live_server, "operator-console-edges"))
    assert not [e for e in searched if e.get("case_ref") == "CASE-TWO-C"]


def test_a_role_refused_on_a_console_form_is_audited_as_forbidden(
    live_server: LiveServer,
) -> None:
    with logged_in(live_server, "enroller-console-edges") as browser:
        csrf = csrf_of(browser, "/console/enrol")
        response = browser.post(
            "/console/identify", files={"image": ("k.jpg", b"x", "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "CASE-FORBID", "csrf": csrf},
        )
    assert response.status_code == 403
    events: list[dict[str, Any]] = [
        e for e in audit_events(live_server, kind="service.refused",
                                actor=actor(live_server, "enroller-console-edges"))
        if e["route"] == "/console/identify"]
    assert [e["problem"] for e in events] == ["/problems/forbidden"]


@pytest.mark.parametrize("value", ["²", "%C2%B9", "-1", "abc"])
def test_a_bad_number_in_the_audit_page_address_is_a_console_page(
    live_server: LiveServer, value: str
) -> None:
    with logged_in(live_server, "auditor") as browser:
        response = browser.get(f"/console/audit?limit={value}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "must be a whole number" in response.text
