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

from custom_embedders import HalvedEmbedder
from facetrust import FacePipeline, Settings
from facetrust.evaluation import run_calibration
from facetrust.gallery import Gallery
from facetrust.service import Role, ServiceSettings, SqliteApiKeyStore, create_app
from facetrust.service.inputs import DISTANCE_DIGITS

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


def test_a_gallery_with_a_calibrated_custom_embedder_decides_at_its_point_over_http(
    tmp_path: Path,
) -> None:
    """A program serves a gallery whose pipeline has an embedder of its own, calibrated
    and recorded in the gallery: the REST verification decides at that point, and
    ``GET /v1/policy`` publishes it, as the library does."""
    make_gallery_folder(tmp_path)
    store = SqliteApiKeyStore(tmp_path / "api-keys.db")
    key = api_keys_of(tmp_path, store).create(Role.OPERATOR, "operator", created_by="tests").key
    store.close()
    data = Path(__file__).resolve().parents[1] / "data"
    with Gallery.find(tmp_path, pipeline=FacePipeline(Settings(),
                                                      embedder=HalvedEmbedder())) as gallery:
        run = run_calibration(data / "lfw", data / "pairs_sample.txt", [data / "labels_sample"],
                              dataset="tests/data LFW sample", pipeline=gallery.pipeline)
        assert run.calibration is not None
        gallery.record_calibration(run.calibration, actor="evaluator")
        point = gallery.operating_point()
        settings = ServiceSettings(gallery=str(tmp_path))
        with (embedded_server(gallery, settings) as url,
              httpx.Client(base_url=url, timeout=60.0,
                           headers={"Authorization": f"Bearer {key}"}) as operator):
            answer = operator.post(
                "/v1/verify", data={**SEARCH, "case_ref": "CUSTOM-MODEL"},
                files={"image_a": ("a.jpg", photo("Kofi_Annan", 1).read_bytes(), "image/jpeg"),
                       "image_b": ("b.jpg", photo("Kofi_Annan", 2).read_bytes(), "image/jpeg")})
            assert answer.status_code == 200, answer.text
            verdict = answer.json()
            published = operator.get("/v1/policy").json()["operating_point"]
    # responses round distances and thresholds to DISTANCE_DIGITS; the policy does not
    assert (verdict["model_id"], verdict["operating_point"], verdict["threshold"]) == (
        HalvedEmbedder.model_id, point.name, round(point.threshold, DISTANCE_DIGITS))
    assert verdict["match"]
    assert (published["model_id"], published["name"], published["threshold"]) == (
        HalvedEmbedder.model_id, point.name, point.threshold)
