"""The console's audit trail in a real browser (Debian's chromium driven by Playwright).

The auditor pages through the trail by sequence number, filters it by kind and
subject, downloads the filtered range as JSON lines and reads the head MAC to
anchor; long values wrap instead of widening the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import EVIDENCE_SHA256, LiveServer
from .test_service_browser import log_in, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SUBJECT = "audit-trail-paged"
OTHER = "audit-trail-other"
LONG_REF = "scan-" + "0123456789abcdef" * 25  # 405 characters without a space


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def consents(live_server: LiveServer) -> list[str]:
    """Three consents of SUBJECT (the last with a long evidence reference), one of OTHER."""
    refs = ["form-1", "form-2", LONG_REF]
    with live_server.client("enroller") as enroller:
        for subject, subject_refs in ((SUBJECT, refs), (OTHER, ["form-other"])):
            assert enroller.post("/v1/subjects", json={"subject_id": subject}).status_code == 201
            for ref in subject_refs:
                response = enroller.post(f"/v1/subjects/{subject}/consents", json={
                    "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
                    "evidence_ref": ref, "evidence_sha256": EVIDENCE_SHA256,
                    "notice_version": "2026-01",
                })
                assert response.status_code == 201, response.text
    return refs


def first_seq(page: Page) -> int:
    return int(page.locator("#events tr").nth(1).locator("td").first.inner_text())


def test_auditor_pages_filters_exports_and_anchors_the_trail(
    page: Page, live_server: LiveServer, consents: list[str]
) -> None:
    log_in(page, live_server, "auditor-browser")
    page.click("header >> text=Audit trail")
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")
    with live_server.client("auditor") as auditor:
        head = auditor.get("/v1/audit/head").json()
    expect(page.locator("#head-mac")).to_have_text(head["mac"])
    expect(page.locator("#head-seq")).to_have_text(str(head["seq"]))

    page.fill("input[name=kind]", "consent.grant")
    page.fill("input[name=subject]", SUBJECT)
    page.fill("input[name=limit]", "1")
    page.click("main button[type=submit]")
    rows = page.locator("#events tr")
    expect(rows).to_have_count(2)  # the header and one event
    expect(rows.nth(1)).to_contain_text(LONG_REF)
    newest = first_seq(page)
    expect(page.locator("#newer-top")).to_have_count(0)
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"the page is {wide}px wider than the window: long values must wrap"
    shot(page, "audit-paged")
    page.set_viewport_size({"width": 420, "height": 900})  # a phone: the table scrolls itself
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"on a phone the page is {wide}px wider than the window"
    shot(page, "audit-paged-narrow")
    page.set_viewport_size({"width": 1000, "height": 900})

    seen = [newest]
    for ref in reversed(consents[:-1]):
        page.click("#older-top")
        expect(rows.nth(1)).to_contain_text(f"evidence_ref={ref}")
        expect(rows.nth(1)).to_contain_text(SUBJECT)
        seen.append(first_seq(page))
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 3
    expect(page.locator("#older-top")).to_have_count(0)  # the oldest consent of SUBJECT
    page.click("#newer-top")
    expect(rows.nth(1)).to_contain_text("evidence_ref=form-2")
    assert first_seq(page) == seen[1]
    page.click("#newer-top")
    assert first_seq(page) == newest
    expect(page.locator("#newer-top")).to_have_count(0)

    with page.expect_download() as download_info:
        page.click("#export")
    download = download_info.value
    assert download.suggested_filename.endswith(".jsonl")
    lines = [json.loads(line) for line in Path(download.path()).read_text().splitlines()]
    assert [line["seq"] for line in lines] == sorted(seen)
    assert [line["evidence_ref"] for line in lines] == consents
    assert all(line["kind"] == "consent.grant" and line["subject_ids"] == [SUBJECT]
               and len(line["mac"]) == 64 for line in lines)

    # actor and time range: the enroller's events of SUBJECT, then a range before them
    page.fill("input[name=kind]", "")
    page.fill("input[name=actor]", f"key:{live_server.key_ids['enroller']}")
    page.fill("input[name=limit]", "10")
    page.fill("input[name=since]", lines[0]["recorded_at"][:10])
    page.click("main button[type=submit]")
    expect(rows).to_have_count(5)  # subject.add and three consents
    expect(rows.nth(4)).to_contain_text("subject.add")
    page.fill("input[name=since]", "")
    page.fill("input[name=until]", "2000-01-01")
    page.click("main button[type=submit]")
    expect(rows).to_have_count(1)
    expect(page.locator(".pager").first).to_contain_text("No events match.")


def test_bad_filters_are_explained_in_the_page(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "auditor-browser")
    response = page.goto(f"{live_server.url}/console/audit?since=last+tuesday&before=x")
    assert response is not None and response.status == 400
    expect(page.locator(".error")).to_contain_text("ISO 8601")
    expect(page.locator("input[name=since]")).to_have_value("last tuesday")
    response = page.goto(f"{live_server.url}/console/audit?before=-3")
    assert response is not None and response.status == 400
    expect(page.locator(".error")).to_contain_text("'before' parameter must be a whole number")


def test_only_the_auditor_may_export_the_trail(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "operator-browser")
    response = page.goto(f"{live_server.url}/console/audit/export?kind=identify")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Not available")
