"""Fixtures of the service tests: a gallery folder, API keys, and one real server
process on 127.0.0.1 shared by the session (started once, stopped at the end)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, Role, SqliteApiKeyStore
from facetrust.service.apikeys import ApiKeyStore

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"
MULTI_FACE = Path(__file__).parent.parent / "data" / "multi_face" / "Vicente_Fox_0002.jpg"
EVIDENCE_SHA256 = "ab" * 32

#: Limits of the test server: small enough to test, large enough for the sample photos.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Per key and per operation (enrolments included): a module that enrols many photos
#: has an enroller key of its own.
IDENTIFY_BURST = 20


def photo(name: str, number: int = 1) -> Path:
    """A sample photo: ``photo("Colin_Powell", 2)`` is Colin_Powell_0002.jpg."""
    return SAMPLE / name / f"{name}_{number:04d}.jpg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A ``facetrust serve`` process on loopback, its gallery folder and one key per name."""

    url: str
    folder: Path
    keys: dict[str, str]
    key_ids: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, name: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[name]}"} if name else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)

    def audit_head(self) -> int:
        """The audit log's last sequence number (read with the ``auditor`` key)."""
        with self.client("auditor") as auditor:
            return int(auditor.get("/v1/audit/head").json()["seq"])

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        """The audit events after ``seq``, once the chain is verified intact."""
        with self.client("auditor") as auditor:
            found = auditor.get("/v1/audit/events", params={"after": seq, "limit": 1000})
            assert found.status_code == 200, found.text
            verified = auditor.get("/v1/audit/verify").json()
        assert verified["ok"], verified
        return [e for e in found.json()["events"] if e["seq"] > seq]


def make_gallery_folder(folder: Path, **settings: Any) -> Path:
    """A new gallery (``facetrust init`` layout) in ``folder``, ``settings`` overriding
    its config (e.g. ``operating_point="fmr-1e-4"``); returns its config file."""
    gallery, config_path = Gallery.init_folder(folder, **settings)
    gallery.close()
    return config_path


def api_keys_of(folder: Path, store: ApiKeyStore) -> ApiKeys:
    """The API keys in ``store``, their rows sealed for the gallery in ``folder``."""
    with Gallery.find(folder) as gallery:
        return ApiKeys.for_gallery(gallery, store)


#: The keys every service test may use: name -> role. Separate keys per test area
#: keep rate limits and reviewer identities independent.
KEYS = {
    "enroller": Role.ENROLLER,
    "operator": Role.OPERATOR,
    "operator2": Role.OPERATOR,
    "operator3": Role.OPERATOR,
    "operator-limited": Role.OPERATOR,
    "operator-schema": Role.OPERATOR,
    "operator-browser": Role.OPERATOR,
    "operator-audited": Role.OPERATOR,
    "auditor": Role.AUDITOR,
    "admin": Role.ADMIN,
    "admin-revoker": Role.ADMIN,
    "enroller-browser": Role.ENROLLER,
    "auditor-browser": Role.AUDITOR,
    "operator-verify-limited": Role.OPERATOR,
    "operator-photos-limited": Role.OPERATOR,
    "enroller-limited": Role.ENROLLER,
    "enroller-retries": Role.ENROLLER,
    "enroller-trust": Role.ENROLLER,
    "operator-console-limited": Role.OPERATOR,
    "operator-console-vs-limited": Role.OPERATOR,
    "operator-console-edges": Role.OPERATOR,
    "enroller-console-edges": Role.ENROLLER,
    "enroller-console-limited": Role.ENROLLER,
    "operator-refused": Role.OPERATOR,
    "operator-hidden-text": Role.OPERATOR,
    "enroller-refused": Role.ENROLLER,
    "admin-audited": Role.ADMIN,
    "review-searcher": Role.OPERATOR,
    "reviewer-a": Role.OPERATOR,
    "reviewer-b": Role.OPERATOR,
    "enroller-closing": Role.ENROLLER,
    "closing-searcher": Role.OPERATOR,
    "closing-reviewer": Role.OPERATOR,
    "enroller-privacy": Role.ENROLLER,
    "operator-privacy": Role.OPERATOR,
    "reviewer-privacy": Role.OPERATOR,
    "enroller-text": Role.ENROLLER,
    "operator-text": Role.OPERATOR,
}


def start_server(
    folder: Path, keys: dict[str, Role], env: dict[str, str] | None = None,
    **gallery_settings: Any,
) -> LiveServer:
    """A new gallery in ``folder`` (its config overridden by ``gallery_settings``), keys
    for ``keys``, and `facetrust serve` on loopback (``env`` added to its environment)."""
    make_gallery_folder(folder, **gallery_settings)
    reports = folder / "reports"
    reports.mkdir()
    (reports / "lfw-verification.json").write_text(
        json.dumps({"protocol": "LFW View 2", "pairs": 6000, "accuracy": 0.9938})
    )
    store = SqliteApiKeyStore(folder / "api-keys.db")
    api_keys = api_keys_of(folder, store)
    created = {name: api_keys.create(role, name, created_by="tests") for name, role in keys.items()}
    store.close()
    return launch_server(
        folder, {n: c.key for n, c in created.items()},
        {n: c.record.key_id for n, c in created.items()}, env,
    )


def launch_server(
    folder: Path, keys: dict[str, str], key_ids: dict[str, str], env: dict[str, str] | None = None
) -> LiveServer:
    """`facetrust serve` on loopback for the gallery in ``folder`` (made by start_server)."""
    port = free_port()
    log = folder / f"server-{port}.log"
    environment = {
        **os.environ,
        "FACETRUST_SERVICE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "FACETRUST_SERVICE_IDENTIFY_BURST": str(IDENTIFY_BURST),
        "FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "1",
        **(env or {}),
    }
    script = "from facetrust.cli.main import cli; cli()"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", script, "serve", "--gallery", str(folder),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=environment,
        )
    url = f"http://127.0.0.1:{port}"
    server = LiveServer(url, folder, keys, key_ids, process, log)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
    return server


def stop_server(server: LiveServer) -> None:
    """Stop ``server`` as Ctrl-C would (it flushes its counted refusals to the audit log)."""
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("service-gallery"), KEYS)
    yield server
    stop_server(server)


def add_consented_subject(
    client: httpx.Client, subject_id: str, purposes: tuple[str, ...] = ("access-control",)
) -> None:
    """Register ``subject_id`` and record a consent for ``purposes``, through the API."""
    assert client.post("/v1/subjects", json={"subject_id": subject_id}).status_code == 201
    response = client.post(
        f"/v1/subjects/{subject_id}/consents",
        json={
            "purposes": list(purposes),
            "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": f"form-{subject_id}",
            "evidence_sha256": EVIDENCE_SHA256,
            "notice_version": "2026-01",
        },
    )
    assert response.status_code == 201, response.text


def two_people_photo(folder: Path) -> Path:
    """Two LFW portraits side by side: several faces and no clear subject, which every
    face policy but ``largest`` and an index refuses (``multiple-faces``)."""
    path = folder / "two-people.jpg"
    if not path.exists():
        from PIL import Image

        left = Image.open(photo("Serena_Williams", 1)).convert("RGB")
        right = Image.open(photo("Venus_Williams", 1)).convert("RGB")
        pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
        pair.paste(left, (0, 0))
        pair.paste(right, (left.width, 0))
        pair.save(path, quality=90)
    return path


def enrolled_subject(server: LiveServer, enroller: str, subject_id: str) -> str:
    """``subject_id``, consented for access-control and enrolled from one photo of Hu
    Jintao by the key ``enroller``, through the API."""
    with server.client(enroller) as client:
        add_consented_subject(client, subject_id)
        assert enrol(client, subject_id, photo("Hu_Jintao", 1)).status_code == 201
    return subject_id


def enrol(client: httpx.Client, subject_id: str, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post(
            f"/v1/subjects/{subject_id}/enrolments",
            files={"photo": (path.name, handle, "image/jpeg")},
        )


#: Debian's chromium, driven by Playwright (never Playwright's own browser download).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module's console tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context and page for one test (1100 x 900)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context.new_page()
    context.close()
