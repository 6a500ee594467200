"""Accessibility of every console page, as each role sees it: axe-core in Debian's chromium.

The pages come from :data:`console_pages.CONSOLE_PAGES` (forms with validation
errors, refused photos, results and error pages included). axe-core is the
copy bundled with the ``axe-playwright-python`` package, injected from disk
(no CDN). A serious or critical violation fails the test with each rule, the
page and the elements concerned.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from facetrust.service import Role

from .conftest import LiveServer, add_consented_subject, enrol, start_server, stop_server
from .console_pages import FACE, SUBJECT, ConsolePage, pages_of
from .test_service_browser import log_in, shot

axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEYS = {"enroller": Role.ENROLLER, "operator": Role.OPERATOR, "auditor": Role.AUDITOR,
        "admin": Role.ADMIN}
#: The impacts that fail the test (axe-core's scale: minor, moderate, serious, critical).
FAILING = ("serious", "critical")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("console-a11y"), KEYS)
    with started.client("enroller") as enroller:
        add_consented_subject(enroller, SUBJECT)
        assert enrol(enroller, SUBJECT, FACE).status_code == 201
    yield started
    stop_server(started)


def violations_on(page: Page, visit: ConsolePage, server: LiveServer) -> list[str]:
    """The serious and critical axe-core violations of ``visit``, one line per rule."""
    page.goto(f"{server.url}{visit.path}")
    if visit.show is not None:
        visit.show(page, server)
    expect(page.locator("h1")).to_have_count(1)
    results = axe_playwright.Axe().run(page)
    shot(page, f"a11y-{visit.name.replace(' ', '-')}")
    return [
        f"{visit.name} ({page.url}): {v['id']} ({v['impact']}) {v['help']}: "
        + "; ".join(str(node["target"]) for node in v["nodes"])
        for v in results.response["violations"] if v["impact"] in FAILING
    ]


def test_the_login_pages_have_no_serious_violations(page: Page, server: LiveServer) -> None:
    found = [line for visit in pages_of(None) for line in violations_on(page, visit, server)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
def test_every_page_of_each_role_has_no_serious_violations(
    page: Page, server: LiveServer, role: Role
) -> None:
    log_in(page, server, role.value)
    visits = pages_of(role)
    assert len(visits) >= 4
    found = [line for visit in visits for line in violations_on(page, visit, server)]
    assert not found, "\n".join(found)


def test_axe_runs_from_the_local_copy_and_catches_a_violation(
    page: Page, server: LiveServer
) -> None:
    # the bundled axe.min.js, read from disk: the page loads nothing from elsewhere
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    log_in(page, server, "auditor")
    page.evaluate("document.querySelector('main').append(document.createElement('img'))")
    results = axe_playwright.Axe().run(page)
    rules = {v["id"]: v["impact"] for v in results.response["violations"]}
    assert rules.get("image-alt") == "critical"  # an image without text: the check works
    assert all(url.startswith(server.url) for url in requested), requested
