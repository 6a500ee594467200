"""Replicas that agree: three ``facetrust serve`` processes over one PostgreSQL gallery.

Each replica has its own copy of the gallery folder (config and master key
file), as a replica on its own host would; they share nothing but the
PostgreSQL databases (gallery and key store). What one replica commits is in
force on the others at their very next request.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, Role, SqlApiKeyStore
from facetrust.service.auth import SESSION_COOKIE
from facetrust.service.service_db import open_service_database

from .conftest import (
    LiveServer,
    add_consented_subject,
    enrol,
    launch_server,
    photo,
    stop_server,
)

pytestmark = [pytest.mark.postgres, pytest.mark.service, pytest.mark.slow]

KEYS = {
    "enroller": Role.ENROLLER,
    "operator": Role.OPERATOR,
    "operator2": Role.OPERATOR,
    "operator3": Role.OPERATOR,
    "operator-reconnect": Role.OPERATOR,
    "operator-limited": Role.OPERATOR,
    "auditor": Role.AUDITOR,
    "admin": Role.ADMIN,
    "console-user": Role.AUDITOR,
    "never-used": Role.AUDITOR,
}

#: Small shared limits, so that spending them across replicas is quick to show.
IDENTIFY_BURST = 30
FAILURE_BURST = 4
ENV = {
    "FACETRUST_SERVICE_IDENTIFY_BURST": str(IDENTIFY_BURST),
    "FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "1",
    "FACETRUST_SERVICE_AUTH_FAILURE_BURST": str(FAILURE_BURST),
    "FACETRUST_SERVICE_AUTH_FAILURES_PER_MINUTE": "1",
}


@dataclass
class Fleet:
    """Replicas of one PostgreSQL gallery, by name, and the keys they all accept."""

    replicas: dict[str, LiveServer]
    keys: dict[str, str]
    key_ids: dict[str, str]
    #: The server's maintenance URL and the fleet's two databases (gallery, key store).
    admin_url: str
    databases: tuple[str, str]

    def client(self, replica: str, key: str | None = None) -> httpx.Client:
        return self.replicas[replica].client(key)

    def restart(self, replica: str) -> LiveServer:
        old = self.replicas[replica]
        self.replicas[replica] = launch_server(old.folder, self.keys, self.key_ids, ENV)
        return self.replicas[replica]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[Fleet]:
    import psycopg

    names = {}
    for role in ("gallery", "keystore"):
        names[role] = f"fleet_{role}_{os.getpid()}"
        with psycopg.connect(postgres_server.get_uri(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {names[role]}".encode())
    url = str(postgres_server.get_uri(database=names["gallery"]))
    keystore_url = str(postgres_server.get_uri(database=names["keystore"]))
    base = tmp_path_factory.mktemp("fleet")
    gallery = Gallery.init_folder(base / "origin", database_url=url, keystore_url=keystore_url)[0]
    keys = ApiKeys.for_gallery(
        gallery, SqlApiKeyStore(open_service_database(url), owns_database=True))
    gallery.close()
    created = {name: keys.create(role, name, created_by="tests") for name, role in KEYS.items()}
    keys.store.close()
    replicas = {}
    for name in ("a", "b", "c"):  # each "host" holds its own copy of the config and key file
        shutil.copytree(base / "origin", base / name)
        replicas[name] = launch_server(
            base / name, {n: c.key for n, c in created.items()},
            {n: c.record.key_id for n, c in created.items()}, ENV,
        )
    running = Fleet(replicas, {n: c.key for n, c in created.items()},
                    {n: c.record.key_id for n, c in created.items()},
                    str(postgres_server.get_uri()), (names["gallery"], names["keystore"]))
    yield running
    for server in running.replicas.values():
        if server.process.poll() is None:
            stop_server(server)


def identify(client: httpx.Client, name: str, number: int, case_ref: str) -> httpx.Response:
    with photo(name, number).open("rb") as handle:
        return client.post(
            "/v1/identify", files={"image": (f"{name}.jpg", handle, "image/jpeg")},
            data={"purpose": "access-control", "case_ref": case_ref, "k": "3"},
        )


def verify(client: httpx.Client, subject_id: str, name: str, number: int) -> httpx.Response:
    with photo(name, number).open("rb") as handle:
        return client.post(
            f"/v1/subjects/{subject_id}/verify",
            files={"image": (f"{name}.jpg", handle, "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "FLEET"},
        )


def candidates(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["subject_id"] for c in response.json()["candidates"]]


def enrolled(fleet: Fleet, replica: str, subject_id: str, name: str) -> None:
    with fleet.client(replica, "enroller") as enroller:
        add_consented_subject(enroller, subject_id)
        assert enrol(enroller, subject_id, photo(name, 1)).status_code == 201


def test_erasure_on_one_replica_is_in_force_on_the_next_request_of_another(
    fleet: Fleet,
) -> None:
    enrolled(fleet, "a", "fleet-colin", "Colin_Powell")
    with fleet.client("b", "operator") as on_b:
        assert candidates(identify(on_b, "Colin_Powell", 2, "F-1"))[0] == "fleet-colin"
        with fleet.client("a", "enroller") as on_a:
            erased = on_a.delete("/v1/subjects/fleet-colin", params={"reason": "request 1"})
        assert erased.status_code == 200, erased.text
        assert "fleet-colin" not in candidates(identify(on_b, "Colin_Powell", 2, "F-2"))
    with fleet.client("c", "enroller") as on_c:
        assert on_c.get("/v1/subjects/fleet-colin").status_code == 404


def test_withdrawal_on_one_replica_refuses_verification_on_another(fleet: Fleet) -> None:
    enrolled(fleet, "a", "fleet-kofi", "Kofi_Annan")
    with fleet.client("c", "operator") as on_c:
        assert verify(on_c, "fleet-kofi", "Kofi_Annan", 2).json()["match"] is True
        assert candidates(identify(on_c, "Kofi_Annan", 2, "F-3"))[0] == "fleet-kofi"
        with fleet.client("b", "enroller") as on_b:
            withdrawn = on_b.post("/v1/subjects/fleet-kofi/consents/withdraw", json={})
        assert withdrawn.status_code == 200, withdrawn.text
        refused = verify(on_c, "fleet-kofi", "Kofi_Annan", 2)
        # the last consent withdrawn: the subject's biometric data is erased as well
        assert refused.status_code == 404, refused.text  # the operator is told no more
        assert refused.json()["type"] == "/problems/unknown-subject"
        assert "fleet-kofi" not in candidates(identify(on_c, "Kofi_Annan", 2, "F-4"))


def test_withdrawing_one_purpose_on_one_replica_narrows_the_search_of_another(
    fleet: Fleet,
) -> None:
    enrolled(fleet, "a", "fleet-hu", "Hu_Jintao")
    with fleet.client("a", "enroller") as enroller:
        boarding = {
            "purposes": ["boarding"], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": "form-hu-2", "evidence_sha256": "cd" * 32, "notice_version": "2026-01",
        }
        assert enroller.post("/v1/subjects/fleet-hu/consents", json=boarding).status_code == 201
        consents = enroller.get("/v1/subjects/fleet-hu/consents").json()["consents"]
    access = next(c["consent_id"] for c in consents if c["purposes"] == ["access-control"])
    with fleet.client("c", "operator") as on_c:
        assert candidates(identify(on_c, "Hu_Jintao", 2, "F-6"))[0] == "fleet-hu"
        with fleet.client("b", "enroller") as on_b:
            withdrawn = on_b.post("/v1/subjects/fleet-hu/consents/withdraw",
                                  json={"consent_id": access})
        assert withdrawn.status_code == 200, withdrawn.text
        assert "fleet-hu" not in candidates(identify(on_c, "Hu_Jintao", 2, "F-7"))
        refused = verify(on_c, "fleet-hu", "Hu_Jintao", 2)
        assert refused.status_code >= 400 and "match" not in refused.json(), refused.text
        with photo("Hu_Jintao", 2).open("rb") as handle:
            still = on_c.post(
                "/v1/identify", files={"image": ("hu.jpg", handle, "image/jpeg")},
                data={"purpose": "boarding", "case_ref": "F-8"},
            )
        assert candidates(still)[0] == "fleet-hu"  # the other purpose's consent stands


def test_two_confirmations_at_two_replicas_meet_the_quorum(fleet: Fleet) -> None:
    enrolled(fleet, "b", "fleet-serena", "Serena_Williams")
    with fleet.client("a", "operator") as searcher:
        found = identify(searcher, "Serena_Williams", 2, "F-5").json()
    path = f"/v1/identifications/{found['identification_id']}/reviews"
    clients = [fleet.client("b", "operator2"), fleet.client("c", "operator3")]
    with ThreadPoolExecutor(2) as pool:  # at once: the store serialises them
        answers = list(pool.map(lambda c: c.post(path, json={"subject_id": "fleet-serena"}),
                                clients))
    for client in clients:
        client.close()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["status"] for a in answers) == ["confirmed", "pending"]
    final = next(a.json() for a in answers if a.json()["status"] == "confirmed")
    assert set(final["confirmed_by"]) == {
        f"key:{fleet.key_ids['operator2']}", f"key:{fleet.key_ids['operator3']}"
    }


def test_one_audit_chain_takes_events_from_every_replica_at_once(fleet: Fleet) -> None:
    clients = {r: fleet.client(r, "enroller") for r in "abc"}
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda n: clients["abc"[n % 3]].post("/v1/subjects",
                                                     json={"subject_id": f"chain-{n}"}),
                range(18),
            ))
    finally:
        for client in clients.values():
            client.close()
    assert [a.status_code for a in answers] == [201] * 18
    with fleet.client("b", "auditor") as auditor:
        report = auditor.get("/v1/audit/verify").json()
        added = auditor.get("/v1/audit/events",
                            params={"kind": "subject.add", "limit": 1000}).json()["events"]
    assert report["ok"] is True, report
    mine = [e for e in added if e["subject_ids"][0].startswith("chain-")]
    assert sorted(e["subject_ids"][0] for e in mine) == sorted(f"chain-{n}" for n in range(18))
    assert len({e["seq"] for e in mine}) == 18  # each its own link in the one chain


def test_a_key_revoked_on_one_replica_is_refused_by_every_replica(fleet: Fleet) -> None:
    with fleet.client("a", "admin") as admin:
        created = admin.post("/v1/keys", json={"role": "auditor", "name": "fleet temp"}).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    clients = {r: httpx.Client(base_url=s.url, headers=headers) for r, s in
               fleet.replicas.items()}
    try:
        for client in clients.values():  # each replica now remembers the key as verified
            assert client.get("/v1/me").status_code == 200
        with fleet.client("c", "admin") as admin:
            assert admin.delete(f"/v1/keys/{created['key_id']}").status_code == 200
        for client in clients.values():
            assert client.get("/v1/me").status_code == 401
    finally:
        for client in clients.values():
            client.close()


def test_a_console_session_works_on_every_replica_and_ends_everywhere(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.replicas["a"].url) as browser:
        form = browser.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token is not None
        browser.post("/console/login",
                     data={"api_key": fleet.keys["console-user"], "login_csrf": token[1]})
        cookie = browser.cookies[SESSION_COOKIE]
    elsewhere = {r: httpx.Client(base_url=fleet.replicas[r].url, cookies={SESSION_COOKIE: cookie})
                 for r in ("b", "c")}
    try:
        for client in elsewhere.values():
            assert client.get("/console/audit").status_code == 200
        with fleet.client("a", "admin") as admin:
            assert admin.delete(f"/v1/keys/{fleet.key_ids['console-user']}").status_code == 200
        for client in elsewhere.values():
            after = client.get("/console/audit")
            assert after.status_code == 303 and after.headers["location"] == "/console/login"
    finally:
        for client in elsewhere.values():
            client.close()


def test_the_identify_rate_limit_is_one_limit_for_the_fleet(fleet: Fleet) -> None:
    clients = [fleet.client(r, "operator-limited") for r in ("a", "b", "c")]
    try:
        statuses = [  # not an image: refused (415) after the token is taken, cheaply
            clients[n % 3].post(
                "/v1/identify", files={"image": ("x.jpg", b"not an image", "image/jpeg")},
                data={"purpose": "access-control", "case_ref": f"L-{n}"},
            ).status_code
            for n in range(IDENTIFY_BURST + 3)
        ]
    finally:
        for client in clients:
            client.close()
    # one bucket of IDENTIFY_BURST for the key, not one per replica (3 x IDENTIFY_BURST)
    assert statuses[:IDENTIFY_BURST] == [415] * IDENTIFY_BURST
    assert statuses[IDENTIFY_BURST:] == [429] * 3


def run_load(fleet: Fleet, rounds: int, kill: Callable[[int], None]) -> dict[str, Any]:
    """Enrol, identify and review through every replica; returns what was acknowledged."""
    names = ["Gloria_Macapagal_Arroyo", "Jennifer_Lopez", "Junichiro_Koizumi", "Colin_Powell",
             "George_W_Bush", "Venus_Williams"]
    acknowledged: dict[str, Any] = {"enrolled": [], "identified": [], "reviewed": []}

    def one(step: int) -> None:
        replica = "abc"[step % 3]
        kill(step)
        name = names[step % len(names)]
        subject_id = f"load-{step}"
        try:
            with fleet.client(replica, "enroller") as enroller:
                add_consented_subject(enroller, subject_id)
                if enrol(enroller, subject_id, photo(name, 1)).status_code == 201:
                    acknowledged["enrolled"].append(subject_id)
            with fleet.client(replica, "operator") as operator:
                found = identify(operator, name, 2, f"LOAD-{step}")
                if found.status_code == 200:
                    acknowledged["identified"].append(found.json()["identification_id"])
                    hits = candidates(found)
                    if hits:
                        with fleet.client("abc"[(step + 1) % 3], "operator2") as reviewer:
                            path = f"/v1/identifications/{found.json()['identification_id']}"
                            answer = reviewer.post(f"{path}/reviews",
                                                   json={"subject_id": hits[0]})
                            if answer.status_code == 200:
                                acknowledged["reviewed"].append(answer.json()["audit_seq"])
        except (httpx.HTTPError, AssertionError):
            pass  # the replica was killed under this request: nothing was acknowledged

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, range(rounds)))
    return acknowledged


def test_killing_one_replica_under_load_loses_no_acknowledged_write(fleet: Fleet) -> None:
    victim = fleet.replicas["b"]

    def kill(step: int) -> None:
        if step == 6 and victim.process.poll() is None:
            victim.process.send_signal(signal.SIGKILL)

    acknowledged = run_load(fleet, 15, kill)
    victim.process.wait(timeout=10)
    assert victim.process.returncode == -signal.SIGKILL
    # the survivors served the load: 10 of the 15 rounds went to a and c
    assert len(acknowledged["enrolled"]) >= 10
    with fleet.client("a", "enroller") as enroller:
        for subject_id in acknowledged["enrolled"]:
            subject = enroller.get(f"/v1/subjects/{subject_id}")
            assert subject.status_code == 200 and subject.json()["template_count"] >= 1
    with fleet.client("c", "auditor") as auditor:
        report = auditor.get("/v1/audit/verify").json()
        assert report["ok"] is True, report
        identified = auditor.get("/v1/audit/events",
                                 params={"kind": "identify", "limit": 1000}).json()["events"]
    logged = {e["identification_id"] for e in identified}
    assert set(acknowledged["identified"]) <= logged
    restarted = fleet.restart("b")
    assert restarted.process.poll() is None
    with fleet.client("a", "operator") as on_a, fleet.client("b", "operator") as on_b:
        for name in ("Jennifer_Lopez", "Junichiro_Koizumi"):
            here = identify(on_a, name, 2, "R-1").json()
            there = identify(on_b, name, 2, "R-2").json()
            assert [(c["subject_id"], round(c["distance"], 6)) for c in here["candidates"]] == [
                (c["subject_id"], round(c["distance"], 6)) for c in there["candidates"]
            ]
            assert here["candidates"], name


def test_replicas_reconnect_after_losing_every_database_connection(fleet: Fleet) -> None:
    """As a PostgreSQL restart or failover does, every connection is dropped at once:
    each replica answers 503 with Retry-After while it opens its connections again
    (never 409 or 500), then serves the same answers without being restarted."""
    import psycopg

    enrolled(fleet, "a", "fleet-vicente", "Vicente_Fox")
    with psycopg.connect(fleet.admin_url, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (list(fleet.databases),),
        ).fetchone()
    assert dropped is not None and dropped[0] >= 6  # at least a gallery and a key store each
    for replica in ("a", "b", "c"):
        with fleet.client(replica, "operator-reconnect") as operator:
            for attempt in range(4):
                answer = identify(
                    operator, "Vicente_Fox", 3, f"RECONNECT-{replica}-{attempt}"
                )
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "1"
                assert answer.json()["type"] == "/problems/store-unavailable"
            assert candidates(answer)[0] == "fleet-vicente", (replica, attempt)
    with fleet.client("b", "auditor") as auditor:
        assert auditor.get("/v1/audit/verify").json()["ok"] is True


def test_failed_authentications_are_throttled_across_replicas(fleet: Fleet) -> None:
    # runs last: it blocks unverified keys from this address (127.0.0.1) on every
    # replica, and earlier tests' refused keys from this address count too
    key_id = fleet.key_ids["never-used"]
    wrong = f"ft_{key_id}_" + "A" * 43
    answers = []
    for n in range(FAILURE_BURST + 1):
        replica = "abc"[n % 3]
        with httpx.Client(base_url=fleet.replicas[replica].url,
                          headers={"Authorization": f"Bearer {wrong}"}) as client:
            answers.append(client.get("/v1/me").status_code)
    # one allowance of FAILURE_BURST for the fleet (per replica it would be 3 x FAILURE_BURST)
    assert 429 in answers and answers[-1] == 429, answers
    # the right key, never verified, is held back too (known keys keep working)
    with fleet.client("c", "never-used") as auditor:
        assert auditor.get("/v1/me").status_code == 429
    with fleet.client("a", "operator") as operator:
        assert operator.get("/v1/me").status_code == 200


def test_the_replicas_log_shows_no_crash(fleet: Fleet) -> None:
    for server in fleet.replicas.values():
        assert "Traceback" not in Path(server.log).read_text(), server.log

