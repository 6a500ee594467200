"""The web console in a real browser: Debian's chromium driven by Playwright.

Each role logs in with its key and does its job: the enroller captures a
consent and enrols a photo, the operator verifies and identifies, the
auditor checks the audit trail. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from facetrust.matching import get_operating_point

from .conftest import CHROMIUM, MAX_BODY_BYTES, LiveServer, photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(__file__).parent.parent.parent / "artifacts" / "screenshots"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(
            "chromium is missing in CI: scripts/test.sh installs it with apt-get install chromium"
        )
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, server: LiveServer, key_name: str) -> None:
    page.goto(f"{server.url}/console/")
    expect(page).to_have_url(f"{server.url}/console/login")
    page.fill("input[name=api_key]", server.keys[key_name])
    page.click("main button[type=submit]")
    expect(page.locator("#role")).to_be_visible()


def test_enroller_captures_consent_and_enrols_a_photo(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "enroller-browser")
    expect(page.locator("header")).not_to_contain_text("Identify")
    page.click("text=Consent")
    page.fill("input[name=subject_id]", "web-junichiro")
    page.fill("input[name=display_name]", "J. K.")
    page.check("input[value=access-control]")
    page.fill("input[name=expires_on]", (date.today() + timedelta(days=365)).isoformat())
    page.fill("input[name=evidence_ref]", "paper form 2026-118")
    page.set_input_files("input[name=evidence_file]", files=[{
        "name": "form.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 signed form"}])
    page.fill("input[name=notice_version]", "2026-01")
    page.click("main button[type=submit]")
    expect(page.locator("#consent-result")).to_contain_text("web-junichiro")
    shot(page, "1-consent")

    page.click("header >> text=Enrol")
    page.fill("input[name=q]", "junichiro")  # a search, never a list of everyone
    page.click("main button[type=submit]")
    page.click("#matches tr:has-text('web-junichiro') >> text=Enrol a photo")
    page.set_input_files("input[name=photo]", str(photo("Junichiro_Koizumi", 1)))
    page.click("main button[type=submit]")
    expect(page.locator("#enrol-result")).to_contain_text("Enrolled subject web-junichiro")
    expect(page.locator("#face-chip")).to_be_visible()
    expect(page.locator("#quality")).to_contain_text("passed")
    shot(page, "2-enrol")


def test_the_console_refuses_ids_outside_the_grammar(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "enroller-browser")
    page.click("text=Consent")
    page.fill("input[name=subject_id]", "../x")
    page.check("input[value=access-control]")
    page.fill("input[name=expires_on]", (date.today() + timedelta(days=30)).isoformat())
    page.fill("input[name=evidence_ref]", "paper form 2026-119")
    page.set_input_files("input[name=evidence_file]", files=[{
        "name": "form.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 signed form"}])
    page.fill("input[name=notice_version]", "2026-01")
    page.click("main button[type=submit]")
    expect(page.locator(".error")).to_contain_text("letters A-Z and a-z, digits")


def test_operator_identifies_and_verifies(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "operator-browser")
    expect(page.locator("header")).not_to_contain_text("Enrol")
    page.click("header >> text=Identify")
    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", "GATE-7 2026-11-26")
    page.set_input_files("input[name=image]", str(photo("Junichiro_Koizumi", 2)))
    page.click("main button[type=submit]")
    expect(page.locator("#review-notice")).to_contain_text("Requires human review")
    expect(page.locator("#candidates tr").nth(1)).to_contain_text("web-junichiro")
    shot(page, "3-identify")
    page.click("#candidates >> text=Review page of web-junichiro")
    # the operator who searched may not review it (gallery policy searcher_may_review)
    expect(page.locator("#why-not")).to_contain_text("ran this identification")
    expect(page.locator("#cards button")).to_have_count(0)

    page.click("header >> text=Verify")
    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", "GATE-7 2026-11-26")
    page.set_input_files("input[name=image_a]", str(photo("Gloria_Macapagal_Arroyo", 1)))
    page.set_input_files("input[name=image_b]", str(photo("Gloria_Macapagal_Arroyo", 2)))
    page.click("main button[type=submit]")
    expect(page.locator("#verdict")).to_contain_text("MATCH: distance")
    expect(page.locator("#verdict")).to_contain_text(get_operating_point().name)
    shot(page, "4-verify")

    page.goto(f"{live_server.url}/console/audit")
    expect(page.locator("h1")).to_have_text("Not available")


def test_auditor_sees_the_trail_with_chain_status(page: Page, live_server: LiveServer) -> None:
    log_in(page, live_server, "auditor-browser")
    expect(page.locator("header")).not_to_contain_text("Identify")
    page.click("header >> text=Audit trail")
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")
    operator = f"key:{live_server.key_ids['operator-browser']}"
    identify_rows = page.locator("#events tr", has_text="identify").filter(has_text=operator)
    expect(identify_rows.first).to_contain_text("GATE-7")
    shot(page, "5-audit")
    page.click("header >> text=Evaluation reports")
    page.click("text=lfw-verification.json")
    expect(page.locator("#report")).to_contain_text("LFW View 2")
    shot(page, "6-report")


def test_logout_ends_the_session_for_a_copied_cookie_too(
    browser: Browser, live_server: LiveServer
) -> None:
    context = browser.new_context()
    page = context.new_page()
    log_in(page, live_server, "auditor-browser")
    (cookie,) = [c for c in context.cookies() if c["name"] == "facetrust_session"]
    assert cookie["value"] != live_server.keys["auditor-browser"] and cookie["httpOnly"]
    copy = browser.new_context()
    copy.add_cookies([cookie])  # e.g. taken from the disk of a shared computer
    stolen = copy.new_page()
    stolen.goto(f"{live_server.url}/console/audit")
    expect(stolen.locator("#chain-status")).to_be_visible()  # a live session works anywhere
    page.click("header >> text=Log out")
    expect(page).to_have_url(f"{live_server.url}/console/login")
    stolen.goto(f"{live_server.url}/console/audit")
    expect(stolen).to_have_url(f"{live_server.url}/console/login")  # ended on the server
    copy.close()
    context.close()


def submit_without_browser_checks(page: Page) -> Response | None:
    """Submit the page's main form as a client without HTML form validation would."""
    page.locator("main form[method=post]").last.evaluate("form => form.noValidate = true")
    with page.expect_navigation() as navigation:
        page.click("main form[method=post] >> nth=-1 >> button[type=submit]")
    return navigation.value


def test_console_errors_are_pages_in_the_layout_not_problem_json(
    page: Page, live_server: LiveServer
) -> None:
    log_in(page, live_server, "enroller-browser")
    # no purpose ticked: the consent form comes back with what was typed and the reason
    page.click("text=Consent")
    page.fill("input[name=subject_id]", "web-no-purpose")
    page.fill("input[name=evidence_ref]", "paper form 2026-120")
    page.fill("input[name=notice_version]", "2026-01")
    page.fill("input[name=expires_on]", (date.today() + timedelta(days=30)).isoformat())
    response = submit_without_browser_checks(page)
    assert response is not None and response.status == 422
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator(".error")).to_contain_text("Purposes: tick at least one")
    expect(page.locator(".error")).to_contain_text("submit it again")
    expect(page.locator("input[name=subject_id]")).to_have_value("web-no-purpose")
    expect(page.locator("input[name=evidence_ref]")).to_have_value("paper form 2026-120")
    expect(page.locator("#role")).to_have_text("enroller")
    shot(page, "errors-1-no-purpose")

    # a forged CSRF token: refused (403) on the console page, nothing echoed back
    page.fill("input[name=subject_id]", "web-forged")
    page.locator("input[name=csrf]").last.evaluate("input => input.value = 'forged'")
    page.check("input[value=access-control]")
    response = submit_without_browser_checks(page)
    assert response is not None and response.status == 403
    expect(page.locator(".error")).to_contain_text("security token does not match")
    expect(page.locator("input[name=subject_id]")).to_have_value("")
    shot(page, "errors-2-csrf")

    # an unknown console page: the layout with the menu, not JSON
    response = page.goto(f"{live_server.url}/console/nowhere")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Page not found")
    expect(page.locator("header")).to_contain_text("Consent")

    # the API keeps answering problem+json
    with live_server.client("auditor") as client:
        invalid, missing = client.get("/v1/audit/events?offset=abc"), client.get("/v1/nowhere")
    assert (invalid.status_code, missing.status_code) == (422, 404)
    for api in (invalid, missing):
        assert api.headers["content-type"].startswith("application/problem+json")


def test_identify_k_that_is_not_a_number_keeps_the_form(
    page: Page, live_server: LiveServer
) -> None:
    log_in(page, live_server, "operator-browser")
    page.click("header >> text=Identify")
    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", "GATE-9 k check")
    page.set_input_files("input[name=image]", str(photo("Junichiro_Koizumi", 2)))
    page.fill("input[name=k]", "abc")
    response = submit_without_browser_checks(page)
    assert response is not None and response.status == 422
    expect(page.locator(".error")).to_contain_text("Most candidates: enter a whole number")
    expect(page.locator("input[name=case_ref]")).to_have_value("GATE-9 k check")
    expect(page.locator("input[name=k]")).to_have_value("abc")
    expect(page.locator("select[name=purpose]")).to_have_value("access-control")
    shot(page, "errors-3-k")
    # the refusal is audited with its problem type, as for the API
    operator = f"key:{live_server.key_ids['operator-browser']}"
    with live_server.client("auditor") as auditor:
        events = auditor.get("/v1/audit/events", params={
            "kind": "service.refused", "actor": operator, "limit": "1000"}).json()["events"]
    refused = [e for e in events if e.get("case_ref") == "GATE-9 k check"]
    assert refused and refused[0]["problem"] == "/problems/validation-error"
    assert refused[0]["route"] == "/console/identify"


@pytest.mark.parametrize("form", ["identify", "verify"])
def test_no_purpose_is_preselected_and_the_purposes_are_the_policys(
    page: Page, live_server: LiveServer, form: str
) -> None:
    with live_server.client("admin") as client:
        policy = client.get("/v1/policy").json()
    log_in(page, live_server, "operator-browser")
    page.goto(f"{live_server.url}/console/{form}")
    purpose = page.locator("select[name=purpose]")
    expect(purpose).to_have_value("")  # the operator must choose
    offered = purpose.locator("option:not([disabled])").all_inner_texts()
    assert offered == policy["purposes"]
    page.fill("input[name=case_ref]", "GATE-9 no purpose")
    for name in ("image", "image_a", "image_b"):
        if page.locator(f"input[name={name}]").count():
            page.set_input_files(f"input[name={name}]", str(photo("Junichiro_Koizumi", 2)))
    # the browser refuses the form as it stands...
    assert not purpose.evaluate("select => select.checkValidity()")
    # ...and the server too, for a client that skips the check: the page says what to do
    response = submit_without_browser_checks(page)
    assert response is not None and response.status == 422
    expect(page.locator(".error")).to_contain_text("Purpose: choose one")
    expect(page.locator("input[name=case_ref]")).to_have_value("GATE-9 no purpose")
    expect(purpose).to_have_value("")
    shot(page, f"purpose-{form}")


def create_key_in_console(page: Page, server: LiveServer, used_by: str) -> str:
    page.goto(f"{server.url}/console/keys")
    page.select_option("select[name=role]", "operator")
    page.fill("input[name=name]", used_by)
    page.click("text=Create key")
    return page.locator("#new-key").inner_text().strip()


def revoke_in_console(page: Page, server: LiveServer, used_by: str, secret: str) -> None:
    row = page.locator("#keys tr", has_text=used_by)
    row.locator("text=Revoke").click()
    confirm = page.locator("#confirm-revoke")
    expect(confirm).to_contain_text("cannot be restored")
    expect(confirm).to_contain_text(used_by)
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 200  # asked, not yet revoked
        confirm.locator("text=Cancel").click()
        expect(page.locator("#confirm-revoke")).to_have_count(0)
        page.locator("#keys tr", has_text=used_by).locator("text=Revoke").click()
        page.click("#confirm-revoke >> text=Yes, revoke this key")
        expect(page.locator("main .ok")).to_contain_text("revoked")
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 401


def test_admin_copies_a_new_key_once_and_confirms_a_revoke(
    browser: Browser, live_server: LiveServer
) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text else None)
    log_in(page, live_server, "admin")
    secret = create_key_in_console(page, live_server, "front desk browser")
    assert secret.startswith("ft_")
    page.click("#copy-key")
    expect(page.locator("#copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert not blocked
    shot(page, "keys-1-created")
    page.goto(f"{live_server.url}/console/keys")  # shown once: never again
    expect(page.locator("main")).not_to_contain_text(secret)
    revoke_in_console(page, live_server, "front desk browser", secret)
    shot(page, "keys-2-revoked")
    context.close()


def test_keys_work_without_javascript(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    log_in(page, live_server, "admin")
    secret = create_key_in_console(page, live_server, "gate desk no-js")
    expect(page.locator("#copy-key")).to_be_hidden()  # no script, no button that does nothing
    revoke_in_console(page, live_server, "gate desk no-js", secret)
    context.close()


def test_a_photo_over_the_body_limit_gets_a_console_page(
    page: Page, live_server: LiveServer
) -> None:
    log_in(page, live_server, "operator-browser")
    page.click("header >> text=Identify")
    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", "GATE-9 too large")
    page.set_input_files("input[name=image]", files=[{
        "name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (MAX_BODY_BYTES + 1)}])
    with page.expect_navigation() as navigation:
        page.click("main button[type=submit]")
    response = navigation.value
    assert response is not None and response.status == 413
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator(".error")).to_contain_text("too large")
    expect(page.locator("#role")).to_have_text("operator")
    page.click("text=Back to the form")
    expect(page.locator("h1")).to_have_text("Identify")
