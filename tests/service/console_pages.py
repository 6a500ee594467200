"""Every console page a role can open, in one list, for the tests that visit them all.

Each :class:`ConsolePage` names the roles that visit it (``None`` for the
pages seen before logging in; the "not available" pages are visited by roles
that may not use them), the address, and an optional ``show`` step that
brings the page into a state worth checking: a form sent with a validation
error, a refused photo, a result. The accessibility test (axe-core) visits
every entry as each role; add a page here when adding it to the console.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from playwright.sync_api import Page

from facetrust.service import Role

from .conftest import LiveServer, photo

ENR, OPR, AUD, ADM = Role.ENROLLER, Role.OPERATOR, Role.AUDITOR, Role.ADMIN
EVERY_ROLE = frozenset(Role)

#: The subject the pages show (consented for access-control, one photo enrolled).
SUBJECT = "a11y-subject"
#: Photos the pages' forms send.
FACE = photo("Jennifer_Lopez", 1)
PROBE = photo("Jennifer_Lopez", 2)


@dataclass(frozen=True)
class ConsolePage:
    """One console page to visit: ``path`` opened, then ``show`` run on it if given."""

    name: str
    path: str
    roles: frozenset[Role] | None
    show: Callable[[Page, LiveServer], None] | None = None


def send_unchecked(page: Page, form: str = "main form[method=post]") -> None:
    """Submit the last form matching ``form`` as a client skipping HTML validation would."""
    target = page.locator(form).last
    target.evaluate("form => form.noValidate = true")
    with page.expect_navigation():
        target.locator("button[type=submit]").last.click()


def _fill_consent(page: Page, _: LiveServer) -> None:
    page.fill("input[name=subject_id]", "a11y-no-purpose")
    page.fill("input[name=evidence_ref]", "form a11y")
    page.fill("input[name=notice_version]", "2026-01")
    page.fill("input[name=expires_on]", (date.today() + timedelta(days=30)).isoformat())
    send_unchecked(page)  # no purpose ticked


def _enrol_no_face(page: Page, server: LiveServer) -> None:
    blank = server.folder / "a11y-no-face.png"
    if not blank.exists():
        from PIL import Image

        Image.new("RGB", (240, 240), (200, 200, 200)).save(blank)
    page.set_input_files("input[name=photo]", str(blank))
    send_unchecked(page)


def _enrol_face(page: Page, _: LiveServer) -> None:
    page.set_input_files("input[name=photo]", str(FACE))
    send_unchecked(page)


def _wrong_erase_id(page: Page, _: LiveServer) -> None:
    page.fill("input[name=confirm_id]", "not-the-id")
    send_unchecked(page, "#erase-form")


def _photos(page: Page, names: tuple[str, ...], path: Path) -> None:
    for name in names:
        page.set_input_files(f"input[name={name}]", str(path))


def _no_purpose(*names: str) -> Callable[[Page, LiveServer], None]:
    def show(page: Page, _: LiveServer) -> None:
        if page.locator("input[name=subject_id]").count():
            page.fill("input[name=subject_id]", SUBJECT)
        page.fill("input[name=case_ref]", "A11Y-1")
        _photos(page, names, PROBE)
        send_unchecked(page)
    return show


def _with_purpose(*names: str) -> Callable[[Page, LiveServer], None]:
    def show(page: Page, _: LiveServer) -> None:
        if page.locator("input[name=subject_id]").count():
            page.fill("input[name=subject_id]", SUBJECT)
        page.select_option("select[name=purpose]", "access-control")
        page.fill("input[name=case_ref]", "A11Y-2")
        _photos(page, names, PROBE)
        send_unchecked(page)
    return show


def _new_key(page: Page, _: LiveServer) -> None:
    page.select_option("select[name=role]", "auditor")
    page.fill("input[name=name]", "a11y desk")
    page.click("text=Create key")


def _key_without_name(page: Page, _: LiveServer) -> None:
    send_unchecked(page, "main form[method=post]:has(input[value=create])")


def _revoke_asked(page: Page, _: LiveServer) -> None:
    page.locator("#keys tr", has_text="a11y desk").locator("text=Revoke").first.click()


def _wrong_key(page: Page, _: LiveServer) -> None:
    page.fill("input[name=api_key]", "ft_not-a-key")
    page.click("main button[type=submit]")


#: Every page, in menu order, then the error pages every role can meet.
CONSOLE_PAGES: tuple[ConsolePage, ...] = (
    ConsolePage("login", "/console/login", None),
    ConsolePage("login refused", "/console/login", None, _wrong_key),
    ConsolePage("home", "/console/", EVERY_ROLE),
    ConsolePage("subjects", "/console/subjects", frozenset({ENR})),
    ConsolePage("subjects searched", "/console/subjects?q=a11y", frozenset({ENR})),
    ConsolePage("subject", f"/console/subjects/{SUBJECT}", frozenset({ENR})),
    ConsolePage("subject erase refused", f"/console/subjects/{SUBJECT}", frozenset({ENR}),
                _wrong_erase_id),
    ConsolePage("unknown subject", "/console/subjects/a11y-nobody", frozenset({ENR})),
    ConsolePage("consent", "/console/consent", frozenset({ENR})),
    ConsolePage("consent without purpose", "/console/consent", frozenset({ENR}), _fill_consent),
    ConsolePage("enrol search", "/console/enrol?q=a11y", frozenset({ENR})),
    ConsolePage("enrol form", f"/console/enrol?subject_id={SUBJECT}", frozenset({ENR})),
    ConsolePage("enrol refused", f"/console/enrol?subject_id={SUBJECT}", frozenset({ENR}),
                _enrol_no_face),
    ConsolePage("enrolled", f"/console/enrol?subject_id={SUBJECT}", frozenset({ENR}),
                _enrol_face),
    ConsolePage("verify", "/console/verify", frozenset({OPR})),
    ConsolePage("verify without purpose", "/console/verify", frozenset({OPR}),
                _no_purpose("image_a", "image_b")),
    ConsolePage("verified", "/console/verify", frozenset({OPR}),
                _with_purpose("image_a", "image_b")),
    ConsolePage("verify subject", "/console/verify-subject", frozenset({OPR})),
    ConsolePage("verify subject without purpose", "/console/verify-subject",
                frozenset({OPR}), _no_purpose("photo")),
    ConsolePage("verified subject", "/console/verify-subject", frozenset({OPR}),
                _with_purpose("photo")),
    ConsolePage("identify", "/console/identify", frozenset({OPR})),
    ConsolePage("identify without purpose", "/console/identify", frozenset({OPR}),
                _no_purpose("image")),
    ConsolePage("identified", "/console/identify", frozenset({OPR}), _with_purpose("image")),
    ConsolePage("review queue", "/console/reviews", frozenset({OPR})),
    ConsolePage("audit trail", "/console/audit", frozenset({AUD})),
    ConsolePage("audit trail filtered", "/console/audit?kind=subject.view&limit=5",
                frozenset({AUD})),
    ConsolePage("reports", "/console/reports", frozenset({AUD})),
    ConsolePage("report", "/console/reports/lfw-verification.json", frozenset({AUD})),
    ConsolePage("keys", "/console/keys", frozenset({ADM})),
    ConsolePage("key created", "/console/keys", frozenset({ADM}), _new_key),
    ConsolePage("key revoke asked", "/console/keys", frozenset({ADM}), _revoke_asked),
    ConsolePage("key without a name", "/console/keys", frozenset({ADM}), _key_without_name),
    ConsolePage("page not found", "/console/nowhere", EVERY_ROLE),
    ConsolePage("not available", "/console/keys", frozenset({ENR, OPR, AUD})),
    ConsolePage("not available to admins", "/console/audit", frozenset({ADM})),
)


def pages_of(role: Role | None) -> list[ConsolePage]:
    """The pages ``role`` visits (None: before logging in)."""
    return [p for p in CONSOLE_PAGES if (p.roles is None if role is None
                                         else p.roles is not None and role in p.roles)]
