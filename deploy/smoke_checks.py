"""The smoke test deploy/smoke.sh runs through nginx: health, enrol, identify, audit.

Usage:
    python smoke_checks.py BASE_URL PLAIN_URL CA_CERT KEYS_JSON PHOTOS_FOLDER REPLICA_URL...
    python smoke_checks.py --one-replica-down BASE_URL CA_CERT KEYS_JSON PHOTOS_FOLDER

BASE_URL is nginx's HTTPS address, PLAIN_URL its plain HTTP one. The second
form runs after smoke.sh has stopped one replica: nginx must pass every request
to the other.

Exits non-zero, naming the failed check, if anything is not as expected.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import httpx


def check(ok: bool, what: str, detail: object = "") -> None:
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if not ok and detail else ""))
    if not ok:
        sys.exit(1)


def clients(base: str, ca: str, keys: dict[str, str]) -> Callable[..., httpx.Client]:
    """``client(role)``: an HTTPS client of nginx with that role's key (none: anonymous)."""
    def client(name: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {keys[name]}"} if name else {}
        return httpx.Client(base_url=base, verify=ca, headers=headers, timeout=60)

    return client


def identify_colin(operator: httpx.Client, photo: Path, attempt: str) -> httpx.Response:
    with photo.open("rb") as handle:
        found = operator.post(
            "/v1/identify", files={"image": (photo.name, handle, "image/jpeg")},
            data={"purpose": "access-control", "case_ref": f"SMOKE-{attempt}"},
        )
    check(found.status_code == 200, f"identify #{attempt}", found.text)
    first = found.json()["candidates"][:1]
    check(bool(first) and first[0]["subject_id"] == "smoke-colin",
          f"identify #{attempt} finds the enrolled subject", found.text)
    return found


def from_address(base: str, ca: str, address: str) -> httpx.Client:
    """An HTTPS client of nginx whose connections come from ``address`` (a loopback one)."""
    transport = httpx.HTTPTransport(local_address=address, verify=ca)
    return httpx.Client(base_url=base, transport=transport, timeout=60)


def failed_logins_count_per_client(base: str, ca: str) -> None:
    """The service throttles failed authentications per client address: behind
    nginx that must be the client's (X-Forwarded-For, set by nginx), or one
    attacker would lock every client out; and a client's own X-Forwarded-For
    must not let it escape the throttle."""
    bad = {"Authorization": "Bearer ft_nosuchkey_0000000000000000"}
    with from_address(base, ca, "127.0.0.2") as attacker:
        statuses = [attacker.get("/v1/me", headers=bad).status_code for _ in range(12)]
        check(statuses[0] == 401 and statuses[-1] == 429,
              "failed log-ins from one client get it throttled (429)", statuses)
        spoofed = attacker.get("/v1/me", headers={**bad, "X-Forwarded-For": "192.0.2.7"})
        check(spoofed.status_code == 429,
              "a client's own X-Forwarded-For does not lift its throttle", spoofed.status_code)
    with from_address(base, ca, "127.0.0.3") as other:
        answer = other.get("/v1/me", headers=bad).status_code
        check(answer == 401, "another client is not throttled by the first one's failures",
              answer)


def main(
    base: str, plain: str, ca: str, keys: dict[str, str], photos: Path, replicas: list[str]
) -> None:
    client = clients(base, ca, keys)
    colin = sorted((photos / "Colin_Powell").glob("*.jpg"))
    with client() as anonymous:
        check(anonymous.get("/healthz").status_code == 200, "GET /healthz through nginx (TLS)")
        ready = anonymous.get("/readyz")
        check(ready.status_code == 200, "GET /readyz", ready.text)
        check(ready.headers.get("strict-transport-security", "").startswith("max-age="),
              "HTTPS answers carry Strict-Transport-Security", ready.headers)
        moved = httpx.get(f"{plain}/healthz", follow_redirects=False)
        check(moved.status_code == 308 and moved.headers["location"].startswith(base),
              "plain HTTP is redirected to HTTPS", moved.headers)
        hidden = anonymous.get("/metrics")
        check(hidden.status_code == 404, "GET /metrics is not served through nginx",
              hidden.status_code)
    with client("enroller") as enroller:
        created = enroller.post("/v1/subjects", json={"subject_id": "smoke-colin"})
        check(created.status_code == 201, "create a subject", created.text)
        consent = enroller.post("/v1/subjects/smoke-colin/consents", json={
            "purposes": ["access-control"], "expires_at": "2099-01-01T00:00:00+00:00",
            "evidence_ref": "smoke-form", "evidence_sha256": "ab" * 32,
            "notice_version": "smoke",
        })
        check(consent.status_code == 201, "record a consent", consent.text)
        with colin[0].open("rb") as handle:
            enrolled = enroller.post("/v1/subjects/smoke-colin/enrolments",
                                     files={"photo": (colin[0].name, handle, "image/jpeg")})
        check(enrolled.status_code == 201, "enrol a photo", enrolled.text)
        # a query naming the subject: smoke.sh then checks nginx's access log for it
        listed = enroller.get("/v1/subjects", params={"q": "smoke-colin"})
        check(listed.status_code == 200, "find the subject", listed.text)
    with client("operator") as operator:
        for attempt in range(1, 5):  # least_conn spreads them over both replicas
            found = identify_colin(operator, colin[1], str(attempt))
        check(found.headers.get("cache-control") == "no-store"
              and found.headers.get("x-content-type-options") == "nosniff",
              "a candidate list reaches the client with Cache-Control: no-store", found.headers)
        # nginx lets a body over the service's limit (10 MiB) through, so the
        # client gets the service's problem+json, not nginx's HTML page
        too_big = operator.post(
            "/v1/identify", files={"image": ("big.jpg", b"\xff" * (10 * 2**20 + 1), "image/jpeg")},
            data={"purpose": "access-control", "case_ref": "SMOKE-big"},
        )
        check(too_big.status_code == 413
              and too_big.headers["content-type"].startswith("application/problem+json"),
              "an upload over the limit gets the service's 413 problem", too_big.text[:200])
    failed_logins_count_per_client(base, ca)
    with client("auditor") as auditor:
        report = auditor.get("/v1/audit/verify").json()
        check(report.get("ok") is True, "the audit chain verifies", report)
    served = []
    for url in replicas:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        served.append(sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("facetrust_http_requests_total") and "/v1/identify" in line
        ))
    check(all(n > 0 for n in served), "every replica served identifies", served)


def one_replica_down(base: str, ca: str, keys: dict[str, str], photos: Path) -> None:
    """With one replica stopped, nginx passes every request to the one left."""
    client = clients(base, ca, keys)
    colin = sorted((photos / "Colin_Powell").glob("*.jpg"))
    with client() as anonymous:
        for attempt in range(4):
            ready = anonymous.get("/readyz")
            check(ready.status_code == 200, f"one replica down: GET /readyz #{attempt + 1}",
                  ready.text)
    with client("operator") as operator:
        for attempt in range(1, 5):
            identify_colin(operator, colin[2], f"{attempt} with one replica down")
    with client("auditor") as auditor:
        report = auditor.get("/v1/audit/verify").json()
        check(report.get("ok") is True, "one replica down: the audit chain verifies", report)


if __name__ == "__main__":
    if sys.argv[1] == "--one-replica-down":
        one_replica_down(sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text()),
                         Path(sys.argv[5]))
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text()),
             Path(sys.argv[5]), sys.argv[6:])
