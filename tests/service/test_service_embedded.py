"""The service embedded in a program that opened the gallery itself
(``create_app(settings, gallery=...)``, served by uvicorn in a thread) holds photos to
the same image caps as ``facetrust serve``: the lower of the service's and the
gallery pipeline's, refused as 413 image-too-large, reported and recorded as such."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from facetrust import FacePipeline, Settings
from facetrust.gallery import Gallery
from facetrust.service import Role, ServiceSettings, SqliteApiKeyStore, create_app

from .conftest import api_keys_of, free_port, make_gallery_folder, photo
from .test_service_http import assert_problem
from .test_service_rest_edges import SEARCH, colin_at

pytestmark = pytest.mark.service

#: The embedding program's service cap, below its pipeline's (the library's 40 MP).
SERVICE_MAX_PIXELS = 2_000_000


@contextmanager
def embedded_server(gallery: Gallery, settings: ServiceSettings) -> Iterator[str]:
    """``create_app(settings, gallery=gallery)`` served on loopback from a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, gallery=gallery),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_gallery_given_to_create_app_is_held_to_the_services_image_caps(
    tmp_path: Path,
) -> None:
    make_gallery_folder(tmp_path)
    store = SqliteApiKeyStore(tmp_path / "api-keys.db")
    created = {name: api_keys_of(tmp_path, store).create(role, name, created_by="tests").key
               for name, role in (("operator", Role.OPERATOR), ("auditor", Role.AUDITOR))}
    store.close()
    library = Settings()  # the program's own pipeline: the library's caps (40 MP)
    assert library.max_pixels > SERVICE_MAX_PIXELS
    over = colin_at(1500, 75)  # a real photo of 2.25 MP, 89 kB
    other = photo("Colin_Powell", 2).read_bytes()
    settings = ServiceSettings(gallery=str(tmp_path), max_pixels=SERVICE_MAX_PIXELS)
    with (Gallery.find(tmp_path, pipeline=FacePipeline(library)) as gallery,
          embedded_server(gallery, settings) as url):
        def client(name: str) -> httpx.Client:
            return httpx.Client(base_url=url, timeout=60.0,
                                headers={"Authorization": f"Bearer {created[name]}"})

        with client("operator") as operator:
            refused = operator.post(
                "/v1/verify", data={**SEARCH, "case_ref": "EMBEDDED-CAP"},
                files={"image_a": ("a.jpg", over, "image/jpeg"),
                       "image_b": ("b.jpg", other, "image/jpeg")})
            detail = str(assert_problem(refused, 413, "image-too-large")["detail"])
            assert "2,000,000-pixel cap" in detail, detail
            limits = operator.get("/v1/policy").json()["limits"]
        assert limits["max_pixels"] == SERVICE_MAX_PIXELS
        with client("auditor") as auditor:
            exported = auditor.get("/v1/audit/export", params={"kind": "policy.changed"})
        (started,) = [json.loads(line) for line in exported.text.splitlines()]
        assert started["policy"]["limits"]["max_pixels"] == SERVICE_MAX_PIXELS
