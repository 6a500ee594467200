"""The console's subject pages and enrolment in a real browser (Debian's chromium).

The enroller finds subjects by id or name one page at a time, opens a
subject's page (an audited view), withdraws a consent and erases with the id
typed to confirm; enrolment picks the subject by search, stays on it, and
shows the photo, the aligned face and every quality check, also for a photo
it refuses. An operator checks a photo against one subject for a purpose they
must choose. Each refusal is a page in the console's layout, never
problem+json. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from playwright.sync_api import Browser, Page, Response, expect

from facetrust.service import Role
from facetrust.service.console.routes_subjects import PAGE_SIZE

from .conftest import LiveServer, add_consented_subject, enrol, photo, start_server, stop_server
from .test_service_browser import log_in, shot, submit_without_browser_checks

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEYS = {"desk": Role.ENROLLER, "gate": Role.OPERATOR, "audit": Role.AUDITOR}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gallery of its own: these tests enrol faces the shared server's tests search for."""
    started = start_server(tmp_path_factory.mktemp("console-subjects"), KEYS)
    yield started
    stop_server(started)


def is_console_page(response: Response | None, status: int) -> None:
    assert response is not None and response.status == status
    assert response.headers["content-type"].startswith("text/html")


def audit_events(server: LiveServer, **filters: str) -> list[dict[str, object]]:
    with server.client("audit") as auditor:
        answer = auditor.get("/v1/audit/events", params={**filters, "limit": "1000"})
    events: list[dict[str, object]] = answer.json()["events"]
    return events


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_enroller_searches_pages_and_opens_a_subject(page: Page, server: LiveServer) -> None:
    with server.client("desk") as desk:
        for number in range(PAGE_SIZE + 3):
            assert desk.post("/v1/subjects", json={
                "subject_id": f"pg-{number:03d}",
                "display_name": "Ngozi Adeyemi" if number == 7 else None,
            }).status_code == 201
        add_consented_subject(desk, "pg-kept")
        assert enrol(desk, "pg-kept", photo("George_W_Bush", 1)).status_code == 201
    log_in(page, server, "desk")
    page.click("header >> text=Subjects")
    page.fill("input[name=q]", "pg-")
    page.click("main button[type=submit]")
    rows = page.locator("#subjects tr")
    expect(rows).to_have_count(PAGE_SIZE + 1)  # a header and one page, never everyone
    expect(page.locator("#first-page")).to_have_count(0)
    shot(page, "subjects-1-list")
    page.click("#next-page")
    expect(rows).to_have_count(4 + 1)  # the 3 left, and pg-kept
    expect(page.locator("#next-page")).to_have_count(0)
    expect(rows.nth(1)).to_contain_text(f"pg-{PAGE_SIZE:03d}")

    page.fill("input[name=q]", "ADEYEMI")  # a display name, any case
    page.click("main button[type=submit]")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("pg-007")

    page.fill("input[name=q]", "pg-kept")
    page.click("main button[type=submit]")
    page.click("#subjects a >> text=pg-kept")
    expect(page.locator("h1")).to_have_text("Subject pg-kept")
    expect(page.locator("#template-count")).to_have_text("1")
    expect(page.locator("#photos-kept")).to_have_text("no")
    expect(page.locator("#retention-until")).to_contain_text("20")
    expect(page.locator("#consents tr").nth(1)).to_contain_text("access-control")
    expect(page.locator("#consents tr").nth(1)).to_contain_text("active")
    expect(page.locator("main")).not_to_contain_text("ciphertext")
    shot(page, "subjects-2-subject")
    views = audit_events(server, kind="subject.view", subject="pg-kept")
    assert views and views[-1]["actor"] == f"key:{server.key_ids['desk']}"

    # a subject that does not exist: the list page says so, in the layout
    response = page.goto(f"{server.url}/console/subjects/pg-nobody")
    is_console_page(response, 404)
    expect(page.locator(".error")).to_contain_text("No subject 'pg-nobody'")
    expect(page.locator("#role")).to_have_text("enroller")


def test_withdraw_and_erase_with_the_id_typed_to_confirm(page: Page, server: LiveServer) -> None:
    with server.client("desk") as desk:
        add_consented_subject(desk, "er-1", ("access-control",))
        second = desk.post("/v1/subjects/er-1/consents", json={
            "purposes": ["access-control"], "expires_at": "2098-01-01T00:00:00+00:00",
            "evidence_ref": "form-er-1-b", "evidence_sha256": "cd" * 32,
            "notice_version": "2026-01"})
        assert second.status_code == 201
    log_in(page, server, "desk")
    page.goto(f"{server.url}/console/subjects/er-1")
    consents = page.locator("#consents tr")
    expect(consents).to_have_count(3)
    consents.nth(1).locator("text=Withdraw").click()
    expect(page.locator("#withdraw-result")).to_contain_text("Consent withdrawn (1)")
    expect(consents.nth(1)).to_contain_text("withdrawn")
    expect(consents.nth(2)).to_contain_text("active")

    # a wrong id typed: refused on the server, the page says why, nothing erased
    page.fill("#confirm_id", "er-")
    response = submit_without_browser_checks(page)
    is_console_page(response, 422)
    expect(page.locator(".error")).to_contain_text("must be typed exactly to confirm")
    expect(page.locator("#confirm_id")).to_have_value("er-")
    expect(page.locator("h1")).to_have_text("Subject er-1")
    shot(page, "subjects-3-erase-refused")
    page.fill("#confirm_id", "er-1")
    page.click("#erase-form button[type=submit]")
    expect(page.locator("#erase-result")).to_contain_text("Subject er-1 erased for good")
    shot(page, "subjects-4-erased")
    response = page.goto(f"{server.url}/console/subjects/er-1")
    is_console_page(response, 404)
    (erased,) = audit_events(server, kind="erase", subject="er-1")
    assert erased["actor"] == f"key:{server.key_ids['desk']}"


def test_enrolment_stays_on_the_subject_and_shows_each_check(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    with server.client("desk") as desk:
        assert desk.post("/v1/subjects", json={
            "subject_id": "en-gloria", "display_name": "Gloria M. A."}).status_code == 201
        add_consented_subject(desk, "en-other")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1100,
                                                                       "height": 900})
    page = context.new_page()  # the core flow works without JavaScript
    log_in(page, server, "desk")
    page.click("header >> text=Enrol")
    expect(page.locator("select")).to_have_count(0)  # no list of everyone to pick from
    page.fill("input[name=q]", "gloria m")
    page.click("main button[type=submit]")
    page.click("#matches >> text=Enrol a photo")
    expect(page.locator("#chosen-subject")).to_have_text("en-gloria")

    # no consent yet: refused with the reason, the photo shown, still on the subject
    page.set_input_files("input[name=photo]", str(photo("Gloria_Macapagal_Arroyo", 1)))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("no consent")
    expect(page.locator("#failed-photo img")).to_be_visible()
    expect(page.locator("#chosen-subject")).to_have_text("en-gloria")
    with server.client("desk") as desk:
        response = desk.post("/v1/subjects/en-gloria/consents", json={
            "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": "form-gloria", "evidence_sha256": "ab" * 32,
            "notice_version": "2026-01"})
        assert response.status_code == 201

    page.set_input_files("input[name=photo]", str(photo("Gloria_Macapagal_Arroyo", 1)))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator("#enrol-result")).to_contain_text("Enrolled subject en-gloria")
    expect(page.locator("#photo-kept")).to_contain_text("Photo not kept")  # off by default
    expect(page.locator("#uploaded-photo")).to_be_visible()
    expect(page.locator("#face-chip")).to_be_visible()
    checks = page.locator("#quality tr")
    expect(checks).to_have_count(6)  # header, four checks, overall
    expect(checks.nth(1)).to_contain_text("Inter-eye distance")
    expect(checks.nth(2)).to_contain_text("Sharpness")
    expect(checks.nth(5)).to_contain_text("passed")
    expect(page.locator("#chosen-subject")).to_have_text("en-gloria")  # not reset
    expect(page.locator("#enrol-form")).to_contain_text("1 template(s)")
    shot(page, "enrol-1-enrolled")

    # a blurred photo: refused, shown with the failed check's value and limit
    blurred = tmp_path / "blurred.jpg"
    with Image.open(photo("Gloria_Macapagal_Arroyo", 2)) as original:
        blurred.write_bytes(jpeg(original.filter(ImageFilter.GaussianBlur(4))))
    page.set_input_files("input[name=photo]", str(blurred))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("too blurred")
    expect(page.locator("#failed-photo #uploaded-photo")).to_be_visible()
    expect(page.locator("#face-chip")).to_be_visible()
    sharpness = page.locator("#quality tr").nth(2)
    expect(sharpness).to_contain_text("Sharpness")
    expect(sharpness).to_contain_text("failed")
    expect(sharpness).to_contain_text("≥")
    expect(page.locator("#chosen-subject")).to_have_text("en-gloria")
    shot(page, "enrol-2-blurred")

    # no face at all: the photo and the specific reason
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    empty = tmp_path / "no-face.jpg"
    empty.write_bytes(jpeg(Image.fromarray(gradient).convert("RGB")))
    page.set_input_files("input[name=photo]", str(empty))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("No face")
    expect(page.locator("#failed-photo img")).to_be_visible()
    expect(page.locator("#chosen-subject")).to_have_text("en-gloria")
    shot(page, "enrol-3-no-face")

    # an unknown subject typed into the address: the page says so, in the layout
    response = page.goto(f"{server.url}/console/enrol?subject_id=en-nobody")
    is_console_page(response, 404)
    expect(page.locator(".error")).to_contain_text("No subject 'en-nobody'")
    context.close()


def test_enrolment_keeps_the_photo_as_reference_when_asked(
    page: Page, server: LiveServer, tmp_path: Path
) -> None:
    with server.client("desk") as desk:
        add_consented_subject(desk, "kp-1")
    log_in(page, server, "desk")
    page.goto(f"{server.url}/console/enrol?subject_id=kp-1")
    keep = page.get_by_label("Keep this photo as the reference reviewers compare against")
    expect(keep).not_to_be_checked()  # off by default
    keep.check()

    # refused: the box stays ticked, so the next try keeps the photo too
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    empty = tmp_path / "no-face.jpg"
    empty.write_bytes(jpeg(Image.fromarray(gradient).convert("RGB")))
    page.set_input_files("input[name=photo]", str(empty))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("No face")
    expect(keep).to_be_checked()

    page.set_input_files("input[name=photo]", str(photo("Hu_Jintao", 1)))
    page.click("#enrol-form button[type=submit]")
    expect(page.locator("#enrol-result")).to_contain_text("Enrolled subject kp-1")
    expect(page.locator("#photo-kept")).to_contain_text("Photo kept (encrypted)")
    shot(page, "enrol-4-photo-kept")

    page.goto(f"{server.url}/console/subjects/kp-1")
    expect(page.locator("#photos-kept")).to_have_text("yes (1, encrypted)")
    (enrolment,) = audit_events(server, kind="enrol", subject="kp-1")
    assert enrolment["photos_stored"] == 1


def test_operator_verifies_a_photo_against_a_subject(page: Page, server: LiveServer) -> None:
    with server.client("desk") as desk:
        add_consented_subject(desk, "vs-1")
        assert enrol(desk, "vs-1", photo("Hu_Jintao", 1)).status_code == 201
    log_in(page, server, "gate")
    page.click("header >> text=Verify subject")
    purpose = page.locator("select[name=purpose]")
    expect(purpose).to_have_value("")  # the operator must choose
    page.fill("input[name=subject_id]", "vs-1")
    page.fill("input[name=case_ref]", "DESK-4 2026-11-30")
    page.set_input_files("input[name=photo]", str(photo("Hu_Jintao", 2)))
    response = submit_without_browser_checks(page)  # no purpose chosen
    is_console_page(response, 422)
    expect(page.locator(".error")).to_contain_text("purpose")
    expect(page.locator("input[name=case_ref]")).to_have_value("DESK-4 2026-11-30")
    shot(page, "verify-subject-1-no-purpose")
    # one event for the refusal: the gallery's, with the console's route and status
    refused = audit_events(server, kind="verify.refused",
                           actor=f"key:{server.key_ids['gate']}")
    assert refused[-1]["route"] == "/console/verify-subject"
    assert (refused[-1]["subject_ids"], refused[-1]["status"]) == (["vs-1"], 422)

    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=case_ref]", " ")
    page.set_input_files("input[name=photo]", str(photo("Hu_Jintao", 2)))
    response = submit_without_browser_checks(page)  # a purpose, but no case
    is_console_page(response, 422)
    expect(page.locator(".error")).to_contain_text("Case reference: this field is required")
    page.fill("input[name=case_ref]", "DESK-4 2026-11-30")

    page.select_option("select[name=purpose]", "access-control")
    page.fill("input[name=subject_id]", "vs-nobody")
    page.set_input_files("input[name=photo]", str(photo("Hu_Jintao", 2)))
    response = submit_without_browser_checks(page)
    is_console_page(response, 404)
    expect(page.locator(".error")).to_contain_text("No subject 'vs-nobody'")

    page.fill("input[name=subject_id]", "vs-1")
    page.set_input_files("input[name=photo]", str(photo("Hu_Jintao", 2)))
    page.click("main button[type=submit]")
    expect(page.locator("#verdict")).to_contain_text("MATCH with subject vs-1")
    expect(page.locator("#verdict")).to_contain_text("DESK-4 2026-11-30")
    shot(page, "verify-subject-2-match")
    checks = audit_events(server, kind="verify", subject="vs-1")
    assert checks and checks[-1]["case_ref"] == "DESK-4 2026-11-30"

    # no permission: the operator may not browse subjects, in the layout
    response = page.goto(f"{server.url}/console/subjects")
    is_console_page(response, 403)
    expect(page.locator("h1")).to_have_text("Not available")
    response = page.goto(f"{server.url}/console/subjects/vs-1")
    is_console_page(response, 403)
