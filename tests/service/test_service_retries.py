"""Retries without duplicates (``Idempotency-Key``) and request ids (``X-Request-Id``).

Against real servers on loopback: the session's shared one for the contract,
and, for the crash test, a server of its own that is killed with SIGKILL in
the middle of concurrent keyed enrolments, restarted, and sent every request
again with the same keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from facetrust.service import Role, SqliteApiKeyStore
from facetrust.service.problems import install_handlers
from facetrust.service.request_ids import RequestIdMiddleware

from .conftest import (
    EVIDENCE_SHA256,
    MULTI_FACE,
    LiveServer,
    add_consented_subject,
    api_keys_of,
    free_port,
    make_gallery_folder,
    photo,
)

CLI = "from facetrust.cli.main import cli; cli()"


def keyed(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def consent_body(subject_id: str) -> dict[str, object]:
    return {
        "purposes": ["access-control"],
        "expires_at": "2099-01-01T00:00:00+00:00",
        "evidence_ref": f"form-{subject_id}",
        "evidence_sha256": EVIDENCE_SHA256,
        "notice_version": "2026-01",
    }


def post_photo(
    client: httpx.Client, subject_id: str, path: Path, headers: dict[str, str],
    **form: str,
) -> httpx.Response:
    return client.post(
        f"/v1/subjects/{subject_id}/enrolments",
        files={"photo": (path.name, path.read_bytes(), "image/jpeg")},
        data=form, headers=headers,
    )


# --------------------------------------------------------------------- request ids
def test_every_response_carries_a_request_id(live_server: LiveServer) -> None:
    with live_server.client() as anonymous:
        ok = anonymous.get("/healthz")
        refused = anonymous.get("/v1/me")
    ids = [ok.headers.get("X-Request-Id"), refused.headers.get("X-Request-Id")]
    assert refused.status_code == 401
    assert all(ids) and ids[0] != ids[1]


def test_a_well_formed_request_id_is_kept_and_a_bad_one_replaced(
    live_server: LiveServer,
) -> None:
    with live_server.client("enroller-retries") as client:
        kept = client.get("/v1/subjects", headers={"X-Request-Id": "ticket-42.a_b:c"})
        replaced = client.get("/v1/subjects", headers={"X-Request-Id": "bad id!"})
    assert kept.headers["X-Request-Id"] == "ticket-42.a_b:c"
    assert replaced.headers["X-Request-Id"] not in ("bad id!", "")


def test_the_audit_event_records_the_request_id(live_server: LiveServer) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    with live_server.client("enroller-retries") as client:
        created = client.post(
            "/v1/subjects", json={"subject_id": "retry-audited"},
            headers={"X-Request-Id": request_id},
        )
    assert created.status_code == 201 and created.headers["X-Request-Id"] == request_id
    with live_server.client("auditor") as auditor:
        events = auditor.get("/v1/audit/events", params={"subject": "retry-audited"}).json()
    assert [e["request_id"] for e in events["events"]] == [request_id]


def test_an_unexpected_error_answers_with_the_request_id_too() -> None:
    # The one answer built outside every middleware (Starlette's last-resort
    # handler); a bug cannot be caused for real, so an app with a failing route.
    app = FastAPI()
    install_handlers(app)

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(RequestIdMiddleware)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fails", headers={"X-Request-Id": "bug-1"})
    assert response.status_code == 500
    assert response.headers["X-Request-Id"] == "bug-1"
    assert response.json()["type"] == "/problems/internal-error"
    assert "bug-1" in response.json()["detail"]


# --------------------------------------------------------------------- the contract
def test_a_keyed_retry_answers_the_first_response_and_changes_nothing(
    live_server: LiveServer,
) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as client:
        first = client.post("/v1/subjects", json={"subject_id": "retry-once"}, headers=headers)
        again = client.post("/v1/subjects", json={"subject_id": "retry-once"}, headers=headers)
        unkeyed = client.post("/v1/subjects", json={"subject_id": "retry-once"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert unkeyed.status_code == 409  # without a key, a second create is refused as before


def test_a_key_reused_for_another_request_is_refused(live_server: LiveServer) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as client:
        first = client.post("/v1/subjects", json={"subject_id": "retry-a"}, headers=headers)
        other = client.post("/v1/subjects", json={"subject_id": "retry-b"}, headers=headers)
        missing = client.get("/v1/subjects/retry-b")
    assert first.status_code == 201
    assert other.status_code == 422
    problem = other.json()
    assert problem["type"] == "/problems/idempotency-key-reused"
    assert "new key" in problem["detail"]
    assert missing.status_code == 404


def test_keys_belong_to_the_api_key_that_sent_them(live_server: LiveServer) -> None:
    headers = keyed()
    with (
        live_server.client("enroller-retries") as one,
        live_server.client("enroller-browser") as two,
    ):
        first = one.post("/v1/subjects", json={"subject_id": "retry-p1"}, headers=headers)
        second = two.post("/v1/subjects", json={"subject_id": "retry-p2"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers


def test_a_malformed_key_is_refused(live_server: LiveServer) -> None:
    with live_server.client("enroller-retries") as client:
        response = client.post(
            "/v1/subjects", json={"subject_id": "retry-bad-key"},
            headers={"Idempotency-Key": "has space"},
        )
        missing = client.get("/v1/subjects/retry-bad-key")
    assert response.status_code == 422
    assert missing.status_code == 404


def test_a_refused_request_is_not_kept_and_its_retry_runs_again(live_server: LiveServer) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as client:
        client.post("/v1/subjects", json={"subject_id": "retry-later"})
        refused = post_photo(client, "retry-later", photo("Kofi_Annan", 1), headers)
        granted = client.post("/v1/subjects/retry-later/consents",
                              json=consent_body("retry-later"))
        enrolled = post_photo(client, "retry-later", photo("Kofi_Annan", 1), headers)
    assert refused.status_code == 409 and granted.status_code == 201
    assert enrolled.status_code == 201 and "Idempotent-Replayed" not in enrolled.headers


def test_a_keyed_enrolment_retried_enrols_the_photo_once(live_server: LiveServer) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as client:
        add_consented_subject(client, "retry-enrol")
        first = post_photo(client, "retry-enrol", photo("Hu_Jintao", 1), headers)
        again = post_photo(client, "retry-enrol", photo("Hu_Jintao", 1), headers)
        other_photo = post_photo(client, "retry-enrol", photo("Hu_Jintao", 2), headers)
        subject = client.get("/v1/subjects/retry-enrol").json()
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json()
    assert other_photo.status_code == 422
    assert subject["template_count"] == 1


def test_a_retry_while_the_first_runs_waits_for_its_answer(live_server: LiveServer) -> None:
    headers = keyed()
    answers: list[httpx.Response] = []

    def send() -> None:
        with live_server.client("enroller-retries") as client:
            answers.append(post_photo(client, "retry-racing", photo("Hu_Jintao", 3), headers))

    with live_server.client("enroller-retries") as client:
        add_consented_subject(client, "retry-racing")
        threads = [threading.Thread(target=send) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        subject = client.get("/v1/subjects/retry-racing").json()
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.text for a in answers}) == 1
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == [
        "", "true", "true"
    ]
    assert subject["template_count"] == 1


def test_consent_and_withdrawal_retries_are_replayed(live_server: LiveServer) -> None:
    consent_key, withdraw_key = keyed(), keyed()
    with live_server.client("enroller-retries") as client:
        client.post("/v1/subjects", json={"subject_id": "retry-consent"})
        body = consent_body("retry-consent")
        first = client.post("/v1/subjects/retry-consent/consents", json=body,
                            headers=consent_key)
        again = client.post("/v1/subjects/retry-consent/consents", json=body,
                            headers=consent_key)
        gone = client.post("/v1/subjects/retry-consent/consents/withdraw", json={},
                           headers=withdraw_key)
        gone_again = client.post("/v1/subjects/retry-consent/consents/withdraw", json={},
                                 headers=withdraw_key)
        consents = client.get("/v1/subjects/retry-consent/consents").json()["consents"]
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert gone.status_code == gone_again.status_code == 200
    assert gone_again.json() == gone.json()
    assert len(consents) == 1


def new_key(live_server: LiveServer, role: str, name: str) -> httpx.Client:
    """A client with a key of its own, created by the admin (own rate limit, own reviewer)."""
    with live_server.client("admin") as admin:
        created = admin.post("/v1/keys", json={"role": role, "name": name})
    assert created.status_code == 201, created.text
    return httpx.Client(base_url=live_server.url, timeout=60.0,
                        headers={"Authorization": f"Bearer {created.json()['key']}"})


def test_a_keyed_review_retried_is_recorded_once(live_server: LiveServer) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as enroller:
        add_consented_subject(enroller, "retry-reviewed")
        assert post_photo(enroller, "retry-reviewed", photo("Venus_Williams", 1),
                          {}).status_code == 201
    with (
        new_key(live_server, "operator", "retry-searcher") as searcher,
        new_key(live_server, "operator", "retry-reviewer") as reviewer,
    ):
        found = searcher.post(
            "/v1/identify",
            files={"image": ("p.jpg", photo("Venus_Williams", 2).read_bytes(), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "CASE-RETRY"},
        ).json()
        path = f"/v1/identifications/{found['identification_id']}/reviews"
        decision = {"subject_id": "retry-reviewed", "note": "checked"}
        first = reviewer.post(path, json=decision, headers=headers)
        again = reviewer.post(path, json=decision, headers=headers)
        unkeyed = reviewer.post(path, json=decision)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["confirmed_by"] == [first.json()["confirmed_by"][0]]
    assert unkeyed.status_code == 409  # without the key, a second decision is refused


def test_a_client_that_gave_up_waiting_retries_without_a_duplicate(
    live_server: LiveServer,
) -> None:
    headers = keyed()
    with live_server.client("enroller-retries") as client:
        add_consented_subject(client, "retry-impatient")
        # the client gives up waiting: it does not know whether the enrolment happened
        with (
            httpx.Client(base_url=live_server.url, timeout=0.001,
                         headers=client.headers) as impatient,
            contextlib.suppress(httpx.TimeoutException),
        ):
            post_photo(impatient, "retry-impatient", photo("Serena_Williams", 1), headers)
        retried = post_photo(client, "retry-impatient", photo("Serena_Williams", 1), headers)
        subject = client.get("/v1/subjects/retry-impatient").json()
    assert retried.status_code == 201, retried.text
    assert subject["template_count"] == 1


# --------------------------------------------------------------------- section 4 inputs
def test_consent_accepts_the_evidence_file_and_keeps_only_its_hash(
    live_server: LiveServer,
) -> None:
    evidence = b"%PDF-1.4 signed consent form of retry-evidence"
    with live_server.client("enroller-retries") as client:
        client.post("/v1/subjects", json={"subject_id": "retry-evidence"})
        response = client.post(
            "/v1/subjects/retry-evidence/consents",
            data={
                "purposes": ["access-control", "boarding"],
                "expires_at": "2099-01-01T00:00:00+00:00",
                "evidence_ref": "form-77",
                "notice_version": "2026-01",
            },
            files={"evidence": ("form.pdf", evidence, "application/pdf")},
        )
        missing = client.post(
            "/v1/subjects/retry-evidence/consents",
            data={"purposes": "access-control", "expires_at": "2099-01-01T00:00:00+00:00",
                  "evidence_ref": "form-78", "notice_version": "2026-01"},
            files={"other": ("x.txt", b"x", "text/plain")},
        )
    assert response.status_code == 201, response.text
    consent = response.json()
    assert consent["evidence_sha256"] == hashlib.sha256(evidence).hexdigest()
    assert consent["purposes"] == ["access-control", "boarding"]
    assert missing.status_code == 422
    assert "evidence" in missing.text
    gallery_files = b"".join(p.read_bytes() for p in live_server.folder.glob("*.db*"))
    assert evidence not in gallery_files


def test_enrolment_takes_a_face_policy(live_server: LiveServer) -> None:
    with live_server.client("enroller-retries") as client:
        add_consented_subject(client, "retry-face")
        single = post_photo(client, "retry-face", MULTI_FACE, {}, face="single")
        dominant = post_photo(client, "retry-face", MULTI_FACE, {})
        largest = post_photo(client, "retry-face", MULTI_FACE, {}, face="largest")
        bad = post_photo(client, "retry-face", MULTI_FACE, {}, face="biggest")
    assert single.status_code == 422
    assert single.json()["type"] == "/problems/multiple-faces"
    # The default, "dominant", takes the face the photo is framed on (Fox, at the centre).
    assert dominant.status_code == 201, dominant.text
    assert largest.status_code == 201, largest.text
    assert bad.status_code == 422 and "largest" in bad.text


# --------------------------------------------------------------------- kill -9 and retry
KILL_AFTER_ANSWERS = 3
PEOPLE = ("Colin_Powell", "George_W_Bush", "Gloria_Macapagal_Arroyo", "Hu_Jintao",
          "Jennifer_Lopez", "Kofi_Annan")


def start_server(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", CLI, "serve", "--gallery", str(folder),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT,
            # every photo twice, before and after the kill: not a test of the rate limit
            env={**os.environ, "FACETRUST_SERVICE_IDENTIFY_BURST": "1000"},
        )
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not become ready:\n{log.read_text()}")
        time.sleep(0.2)


class Burst:
    """Every keyed enrolment sent at once, each in its own thread and connection."""

    def __init__(self, url: str, key: str, jobs: list[tuple[str, Path, str]]) -> None:
        self.outcomes: dict[str, httpx.Response | httpx.HTTPError] = {}
        self.answered = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self.send, args=(url, key, *job)) for job in jobs
        ]
        for thread in self.threads:
            thread.start()

    def send(self, url: str, key: str, subject_id: str, path: Path, idempotency_key: str) -> None:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
        try:
            with httpx.Client(base_url=url, timeout=120.0) as client:
                self.outcomes[idempotency_key] = post_photo(client, subject_id, path, headers)
            self.answered.release()
        except httpx.HTTPError as error:
            self.outcomes[idempotency_key] = error

    def join(self) -> dict[str, httpx.Response | httpx.HTTPError]:
        for thread in self.threads:
            thread.join()
        return self.outcomes


@pytest.mark.service
@pytest.mark.slow  # two servers of its own
def test_killed_mid_enrolment_then_retried_enrols_each_photo_exactly_once(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "gallery"
    folder.mkdir()
    make_gallery_folder(folder)
    keys_store = SqliteApiKeyStore(folder / "api-keys.db")
    enroller = api_keys_of(folder, keys_store).create(
        Role.ENROLLER, "retrier", created_by="tests").key
    keys_store.close()
    log = tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(folder, port, log)
    try:
        with httpx.Client(base_url=url, timeout=60.0,
                          headers={"Authorization": f"Bearer {enroller}"}) as client:
            for name in PEOPLE:
                add_consented_subject(client, name.lower().replace("_", "-"))
        jobs = [(name.lower().replace("_", "-"), photo(name, n), str(uuid.uuid4()))
                for name in PEOPLE for n in (1, 2)]
        burst = Burst(url, enroller, jobs)
        # Kill once the first few answers are out: the rest are then unanswered,
        # some maybe committed (no timing assumption: waits for answers, not seconds).
        for _ in range(KILL_AFTER_ANSWERS):
            assert burst.answered.acquire(timeout=300)
        server.send_signal(signal.SIGKILL)
        server.wait()
        before = burst.join()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    answered = {k: r for k, r in before.items()
                if isinstance(r, httpx.Response) and r.status_code == 201}
    assert len(answered) >= KILL_AFTER_ANSWERS and len(answered) < len(jobs)

    server = start_server(folder, port, log)
    try:
        after = Burst(url, enroller, jobs).join()
        with httpx.Client(base_url=url, timeout=60.0,
                          headers={"Authorization": f"Bearer {enroller}"}) as client:
            counts = {s: client.get(f"/v1/subjects/{s}").json()["template_count"]
                      for s, _, _ in jobs}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    responses = {k: r for k, r in after.items() if isinstance(r, httpx.Response)}
    assert len(responses) == len(jobs), after
    assert all(r.status_code == 201 for r in responses.values()), [
        (r.status_code, r.text[:300]) for r in responses.values() if r.status_code != 201
    ]
    replayed = {k for k, r in responses.items() if r.headers.get("Idempotent-Replayed")}
    for key, first in answered.items():  # a response the client saw is the one it gets again
        assert key in replayed and responses[key].json() == first.json()
    duplicates = sum(count - 2 for count in counts.values() if count > 2)
    assert counts == {s: 2 for s, _, _ in jobs}, counts
    verified = subprocess.run(
        [sys.executable, "-c", CLI, "audit", "verify", "--gallery", str(folder)],
        capture_output=True, text=True, env={**os.environ},
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(
        f"\nkill -9 retry run: {len(jobs)} keyed enrolments, {len(answered)} answered before "
        f"the kill, {len(jobs) - len(answered)} unknown; all {len(jobs)} retried: "
        f"{len(replayed)} replayed ({len(replayed) - len(answered)} of them committed but "
        f"unanswered), {len(jobs) - len(replayed)} run now; duplicates: {duplicates}; "
        f"{verified.stdout.strip()}"
    )

