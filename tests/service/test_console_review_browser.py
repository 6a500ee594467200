"""The human-review workflow in a real browser (Debian's chromium through Playwright).

An operator identifies a photo; other operators open it from their review
queue, see the probe with its face box beside each candidate's reference (or
"No reference photo kept"), confirm, and see the quorum status after each
decision. One test does it with the keyboard only; one takes an identification
from search to confirmed with two operators, each logged in with their own key.
Screenshots go to artifacts/screenshots/ (ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, Role, SqliteApiKeyStore

from .conftest import (
    CHROMIUM,
    LiveServer,
    add_consented_subject,
    launch_server,
    photo,
    stop_server,
)
from .test_service_browser import log_in, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(
            "chromium is missing in CI: scripts/test.sh installs it with apt-get install chromium"
        )
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

KEYS = {"enroller": Role.ENROLLER, "searcher": Role.OPERATOR, "alice": Role.OPERATOR,
        "bob": Role.OPERATOR, "auditor": Role.AUDITOR}


def review_server(folder: Path, **policy: object) -> LiveServer:
    """A server of its own: a gallery with ``policy``, keys for :data:`KEYS`, and
    ``kofi`` (photo kept) and ``kofi-twin`` (no photo) enrolled and consented."""
    gallery, _ = Gallery.init_folder(folder, **policy)
    store = SqliteApiKeyStore(folder / "api-keys.db")
    keys = ApiKeys.for_gallery(gallery, store)
    created = {n: keys.create(r, n, created_by="tests") for n, r in KEYS.items()}
    store.close()
    gallery.close()
    server = launch_server(folder, {n: c.key for n, c in created.items()},
                           {n: c.record.key_id for n, c in created.items()})
    with server.client("enroller") as enroller:
        for subject_id, number, keep in (("kofi", 1, "true"), ("kofi-twin", 2, "false")):
            add_consented_subject(enroller, subject_id)
            path = photo("Kofi_Annan", number)
            response = enroller.post(
                f"/v1/subjects/{subject_id}/enrolments",
                files={"photo": (path.name, path.read_bytes(), "image/jpeg")},
                data={"keep_photo": keep},
            )
            assert response.status_code == 201, response.text
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The default policy: the searcher may not review, two confirmations needed."""
    live = review_server(tmp_path_factory.mktemp("review-gallery"))
    yield live
    stop_server(live)


def identify_in_console(page: Page, case_ref: str, number: int = 3) -> None:
    page.click("header >> text=Identify")
    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", case_ref)
    page.set_input_files("input[name=image]", str(photo("Kofi_Annan", number)))
    page.click("main button[type=submit]")
    expect(page.locator("#review-notice")).to_contain_text("Requires human review")


def identify_by_api(server: LiveServer, case_ref: str, searcher: str = "searcher") -> str:
    path = photo("Kofi_Annan", 4)
    with server.client(searcher) as client:
        response = client.post(
            "/v1/identify", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": case_ref},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["identification_id"])


def card(page: Page, subject_id: str) -> Locator:
    """The review page's card of candidate ``subject_id``."""
    title = page.locator("h2", has_text=re.compile(rf": {re.escape(subject_id)}$"))
    return page.locator("section.card", has=title)


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical accessibility violations on the page."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [f"{v['id']}: {v['help']}" for v in found if v["impact"] in ("serious", "critical")]


def image_loaded(page: Page, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def test_the_review_workflow(page: Page, browser: Browser, server: LiveServer) -> None:
    log_in(page, server, "searcher")
    identify_in_console(page, "DESK-1")
    shot(page, "review-1-identify")
    page.click("#candidates >> text=Review page of kofi")
    expect(page.locator("#why-not")).to_contain_text("ran this identification")
    expect(page.locator("#cards button")).to_have_count(0)
    expect(page.locator("#cards img")).to_have_count(0)  # least privilege: no photos
    assert serious_violations(page) == []

    reviewer = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    log_in(reviewer, server, "alice")
    reviewer.click("header >> text=Review queue")
    row = reviewer.locator("#queue tr", has_text="DESK-1")
    expect(row).to_contain_text("access-control")
    expect(row).to_contain_text("0 of 2 confirmations")
    shot(reviewer, "review-2-queue")
    assert serious_violations(reviewer) == []
    row.locator("a").click()
    expect(reviewer.locator("#facts")).to_contain_text("DESK-1")
    expect(reviewer.locator("#probe img")).to_be_visible()
    assert image_loaded(reviewer, "#probe img")
    kofi = card(reviewer, "kofi")
    expect(kofi.locator("img")).to_be_visible()
    twin = card(reviewer, "kofi-twin")
    expect(twin).to_contain_text("No reference photo kept: confirm against an identity document")
    shot(reviewer, "review-3-compare")
    url = reviewer.url
    kofi.get_by_role("button", name="Confirm kofi", exact=True).click()
    expect(reviewer).to_have_url(url.split("?")[0] + "?recorded=kofi%3Aconfirm")
    expect(reviewer.locator("#recorded")).to_contain_text("Your confirmation of kofi is recorded")
    expect(kofi.locator(".status")).to_have_text(
        "1 of 2 confirmations; waiting for a second reviewer."
    )
    expect(kofi).to_contain_text("You confirmed this candidate.")
    shot(reviewer, "review-4-one-of-two")
    assert serious_violations(reviewer) == []
    # the photos are never cached, and go to reviewers only
    source = server.url + (reviewer.locator("#probe img").get_attribute("src") or "")
    shown = reviewer.request.get(source)
    assert shown.status == 200 and shown.headers["content-type"] == "image/jpeg"
    assert shown.headers["cache-control"] == "no-store"
    assert page.request.get(source).status == 403  # the searcher's session
    reviewer.context.close()


def test_keyboard_only_review(browser: Browser, server: LiveServer) -> None:
    identification_id = identify_by_api(server, "DESK-KBD")
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()

    def tab_to(text: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            label = page.evaluate(
                "() => { const e = document.activeElement; return e ? "
                "(e.getAttribute('aria-label') || e.textContent || '').trim() : '' }"
            )
            if label == text:
                return
        raise AssertionError(f"Tab never reached {text!r}")

    page.goto(f"{server.url}/console/login")
    page.keyboard.press("Tab")  # to the key field (the first field of the form)
    while page.evaluate("() => document.activeElement.name") != "api_key":
        page.keyboard.press("Tab")
    page.keyboard.type(server.keys["bob"])
    page.keyboard.press("Enter")
    expect(page.locator("#role")).to_be_visible()
    tab_to("Review queue")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Review queue")
    tab_to("Open review of case DESK-KBD")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/console/reviews/{identification_id}")
    tab_to("Reject kofi-twin")
    page.keyboard.press("Enter")
    expect(page.locator("#recorded")).to_contain_text("Your rejection of kofi-twin is recorded")
    twin = card(page, "kofi-twin")
    expect(twin.locator(".status")).to_contain_text("Rejected by key:")
    tab_to("Confirm kofi")
    page.keyboard.press("Enter")
    expect(page.locator("#recorded")).to_contain_text("Your confirmation of kofi is recorded")
    shot(page, "review-keyboard")
    page.context.close()


def test_two_operators_take_an_identification_from_search_to_confirmed(
    browser: Browser, tmp_path: Path
) -> None:
    live = review_server(tmp_path / "two", searcher_may_review=True, review_quorum=2)
    try:
        first = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
        second = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
        log_in(first, live, "alice")
        identify_in_console(first, "TWO-1")
        first.click("#candidates >> text=Review page of kofi")
        kofi = card(first, "kofi")
        expect(first.locator("#probe img")).to_be_visible()
        first.get_by_role("button", name="Confirm kofi", exact=True).click()
        expect(kofi.locator(".status")).to_have_text(
            "1 of 2 confirmations; waiting for a second reviewer."
        )
        review_url = first.url.split("?")[0]

        log_in(second, live, "bob")  # another operator, with their own key
        second.click("header >> text=Review queue")
        second.locator("#queue tr", has_text="TWO-1").locator("a").click()
        expect(second).to_have_url(review_url)
        second.get_by_role("button", name="Confirm kofi", exact=True).click()
        alice, bob = (f"key:{live.key_ids[n]}" for n in ("alice", "bob"))
        expect(card(second, "kofi").locator(".status")).to_have_text(
            f"Confirmed by {alice} and {bob}."
        )
        expect(second.locator("#case-status")).to_have_text("confirmed")
        expect(second.locator("#probe img")).to_have_count(0)  # deleted on decision
        shot(second, "review-5-confirmed")
        first.reload()
        expect(kofi.locator(".status")).to_have_text(f"Confirmed by {alice} and {bob}.")
        with httpx.Client(base_url=live.url) as anonymous:
            assert anonymous.get(review_url + "/probe.jpg").status_code == 303
        with live.client("auditor") as auditor:
            kinds = [e["kind"] for e in auditor.get(
                "/v1/audit/events", params={"limit": "1000"}).json()["events"]]
        for kind in ("identify", "review.queue", "identification.view", "pending-probe.view",
                     "reference.view", "review", "pending-probe.deleted"):
            assert kind in kinds, kind
    finally:
        stop_server(live)
