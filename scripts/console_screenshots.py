"""Regenerate the README's screenshots of the console's review workflow (docs/images/).

A throwaway gallery in a temporary folder, `facetrust serve` on loopback, two
sample subjects from tests/data/lfw (one enrolled with its photo kept, one
without), and Debian's chromium through Playwright: an operator identifies a
photo, a second operator opens it from the review queue and confirms, a third
confirms too. Each page is saved as a small palette PNG.

Usage: .venv/bin/python scripts/console_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, Role, SqliteApiKeyStore

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT / "tests" / "data" / "lfw"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
KEYS = {"enroller": Role.ENROLLER, "front desk": Role.OPERATOR, "gate officer": Role.OPERATOR,
        "supervisor": Role.OPERATOR}


def lfw(name: str, number: int) -> Path:
    return LFW / name / f"{name}_{number:04d}.jpg"


def start(folder: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """A gallery, keys and a server in ``folder``; returns the process, URL and keys."""
    gallery, _ = Gallery.init_folder(folder)
    store = SqliteApiKeyStore(folder / "api-keys.db")
    sealed = ApiKeys.for_gallery(gallery, store)
    keys = {n: sealed.create(r, n, created_by="screenshots").key for n, r in KEYS.items()}
    store.close()
    gallery.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", "from facetrust.cli.main import cli; cli()", "serve",
         "--gallery", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url, keys
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def enrol(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for subject_id, photo, keep in (("S-1042", lfw("Kofi_Annan", 1), "true"),
                                        ("S-2210", lfw("Kofi_Annan", 2), "false")):
            client.post("/v1/subjects", json={"subject_id": subject_id}).raise_for_status()
            client.post(f"/v1/subjects/{subject_id}/consents", json={
                "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
                "evidence_ref": f"form-{subject_id}", "evidence_sha256": "ab" * 32,
                "notice_version": "2026-01"}).raise_for_status()
            client.post(f"/v1/subjects/{subject_id}/enrolments",
                        files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                        data={"keep_photo": keep}).raise_for_status()


def save(page: Page, path: Path) -> None:
    """The page as a palette PNG (well under 150 KB)."""
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def log_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/console/login")
    page.fill("input[name=api_key]", key)
    page.click("main button[type=submit]")
    page.wait_for_selector("#role")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        process, url, keys = start(Path(folder))
        try:
            enrol(url, keys["enroller"])
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                pages = {name: browser.new_context(viewport={"width": 960, "height": 600})
                         .new_page() for name in ("front desk", "gate officer", "supervisor")}
                desk = pages["front desk"]
                log_in(desk, url, keys["front desk"])
                desk.goto(f"{url}/console/identify")
                desk.select_option("select[name=purpose]", "access-control")
                desk.fill("input[name=case_ref]", "GATE-7 visitor 2026-11-30")
                desk.set_input_files("input[name=image]", str(lfw("Kofi_Annan", 3)))
                desk.click("main button[type=submit]")
                desk.wait_for_selector("#candidates")
                save(desk, out / "console-1-identify.png")

                officer = pages["gate officer"]
                log_in(officer, url, keys["gate officer"])
                officer.goto(f"{url}/console/reviews")
                save(officer, out / "console-2-queue.png")
                officer.locator("#queue a").first.click()
                officer.get_by_role("button", name="Confirm S-1042", exact=True).click()
                officer.wait_for_selector("#recorded")
                save(officer, out / "console-3-review.png")

                supervisor = pages["supervisor"]
                log_in(supervisor, url, keys["supervisor"])
                supervisor.goto(officer.url.split("?")[0])
                supervisor.get_by_role("button", name="Confirm S-1042", exact=True).click()
                supervisor.wait_for_selector("#recorded")
                save(supervisor, out / "console-4-confirmed.png")
                browser.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=15)


if __name__ == "__main__":
    main()
