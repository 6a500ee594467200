"""A hostile or careless caller of the REST API, on a server of its own.

The failed-authentication throttle is tight here (3 at once, 1 a minute), so
the tests that fail keys on purpose do it from loopback addresses of their own
(127.0.0.2 and up): the rest of the module works from 127.0.0.1 with valid keys.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facetrust.service import Role
from facetrust.service.buckets import Buckets, MemoryBuckets, SqlBuckets
from facetrust.service.inputs import parse_face
from facetrust.service.problems import Problem
from facetrust.service.service_db import open_service_database

from .conftest import MAX_BODY_BYTES, LiveServer, photo, start_server, stop_server
from .test_service_http import assert_problem

pytestmark = [pytest.mark.service, pytest.mark.slow]  # a server of its own

FAILURE_BURST = 3
ENV = {"FACETRUST_SERVICE_AUTH_FAILURE_BURST": str(FAILURE_BURST),
       "FACETRUST_SERVICE_AUTH_FAILURES_PER_MINUTE": "1"}
KEYS = {"auditor": Role.AUDITOR, "operator": Role.OPERATOR, "enroller": Role.ENROLLER,
        "victim": Role.AUDITOR, "target": Role.AUDITOR, "crowd": Role.AUDITOR,
        **{f"fresh-{n}": Role.AUDITOR for n in range(FAILURE_BURST + 1)}}
PROBE = photo("Colin_Powell", 1)
SEARCH = {"purpose": "access-control", "case_ref": "EDGE-1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("rest-edges-gallery"), KEYS, ENV)
    yield started
    stop_server(started)


def from_address(server: LiveServer, address: str, key: str | None = None) -> httpx.Client:
    """A client whose requests come from ``address`` (any 127.x.y.z reaches the server)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60.0,
                        transport=httpx.HTTPTransport(local_address=address))


def wrong_key(server: LiveServer, name: str) -> str:
    """A well-formed key with ``name``'s (public) id and a wrong secret."""
    return f"ft_{server.key_ids[name]}_" + "A" * 43


def refused_events(server: LiveServer, **match: Any) -> list[dict[str, Any]]:
    """The ``service.refused`` events whose fields include ``match``."""
    with server.client("auditor") as auditor:
        events = auditor.get("/v1/audit/events", params={
            "kind": "service.refused", "limit": "1000"}).json()["events"]
    return [e for e in events if all(e.get(k) == v for k, v in match.items())]


# -- authentication -----------------------------------------------------------------


def test_failures_with_a_key_id_from_elsewhere_do_not_lock_its_owner_out(
    server: LiveServer,
) -> None:
    with from_address(server, "127.0.0.2", wrong_key(server, "victim")) as attacker:
        answers = [attacker.get("/v1/me").status_code for _ in range(FAILURE_BURST + 1)]
    assert answers == [401] * FAILURE_BURST + [429], answers  # the attacker's address is held
    # The owner, whose key was never verified in this process, still gets in.
    with from_address(server, "127.0.0.3", server.keys["victim"]) as owner:
        response = owner.get("/v1/me")
    assert response.status_code == 200, response.text
    assert response.json()["key_id"] == server.key_ids["victim"]


def test_concurrent_wrong_secrets_get_no_more_argon2_runs_than_the_burst(
    server: LiveServer,
) -> None:
    statuses: list[int] = []
    start = threading.Barrier(24)

    def attempt() -> None:
        with from_address(server, "127.0.0.4", wrong_key(server, "target")) as client:
            start.wait()
            statuses.append(client.get("/v1/me").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each 401 is one argon2 run; a token refills every 60 s, so at most one more.
    assert statuses.count(401) <= FAILURE_BURST + 1, f"{statuses.count(401)} of 24 got 401"
    assert sorted(set(statuses)) == [401, 429], statuses


def test_a_secret_that_verifies_gives_its_failure_token_back(server: LiveServer) -> None:
    # More first verifications (each an argon2 run) than the burst, from one address:
    for n in range(FAILURE_BURST + 1):
        with from_address(server, "127.0.0.5", server.keys[f"fresh-{n}"]) as client:
            assert client.get("/v1/me").status_code == 200, n
    # ...and the address's failure budget is still whole.
    with from_address(server, "127.0.0.5", wrong_key(server, "auditor")) as client:
        assert_problem(client.get("/v1/me"), 401, "unauthorized")


@pytest.mark.parametrize("engine", ["memory", "sqlite", "postgres"])
def test_a_token_given_back_is_one_token_capped_at_the_burst(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest,
) -> None:
    database = None
    buckets: Buckets = MemoryBuckets()
    if engine != "memory":
        database = open_service_database(
            str(tmp_path / "keys.db") if engine == "sqlite"
            else request.getfixturevalue("postgres_url")()
        )
        buckets = SqlBuckets(database)
    rate, burst = 1 / 60, 3.0
    for _ in range(3):
        buckets.spend("a", 1000.0, rate, burst, partial=False)
    assert buckets.spend("a", 1000.0, rate, burst, partial=False) == 0.0  # none left
    buckets.give_back("a", 1000.0, rate, burst)
    assert buckets.level("a", 1000.0, rate, burst) == pytest.approx(1.0)
    buckets.give_back("a", 1060.0, rate, burst)  # one refilled meanwhile, one given back
    assert buckets.level("a", 1060.0, rate, burst) == pytest.approx(3.0)
    buckets.give_back("a", 1060.0, rate, burst)
    assert buckets.level("a", 1060.0, rate, burst) == pytest.approx(burst)  # capped
    assert buckets.spend("a", 1060.0, rate, burst, partial=False) == pytest.approx(burst)
    buckets.give_back("never-spent", 1000.0, rate, burst)  # a full bucket: nothing to do
    assert buckets.level("never-spent", 1000.0, rate, burst) is None
    if database is not None:
        database.close()


# -- bodies the framework cannot parse ------------------------------------------------


def test_a_biometric_body_that_cannot_be_parsed_is_audited_with_the_presented_key(
    server: LiveServer,
) -> None:
    for key in (wrong_key(server, "target"), server.keys["operator"]):
        with httpx.Client(base_url=server.url, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data",
        }) as client:
            response = client.post("/v1/identify", content=b"abc")  # no boundary
        assert_problem(response, 400, "bad-request")
        presented = key.split("_")[1]
        events = refused_events(server, route="/v1/identify", status=400,
                                presented_key_id=presented)
        assert len(events) == 1, events
        assert events[0]["actor"] == "anonymous"  # refused before the key was checked
        assert events[0]["problem"] == "/problems/bad-request"


def test_deeply_nested_json_is_a_validation_error_not_a_crash(server: LiveServer) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    with server.client("enroller") as client:
        response = client.post("/v1/subjects/s-deep/consents", content=nested,
                               headers={"Content-Type": "application/json"})
        assert_problem(response, 422, "validation-error")
        assert "must be JSON" in response.text
        assert client.get("/v1/me").status_code == 200  # the connection is still good
    # The same body to a biometric JSON route: 400 from the framework, audited intact.
    with server.client("operator") as client:
        response = client.post("/v1/identifications/edge-none/reviews", content=nested,
                               headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "bad-request")
    assert refused_events(server, route="/v1/identifications/{identification_id}/reviews",
                          status=400)


# -- form fields ----------------------------------------------------------------------


def test_a_face_field_written_with_a_unicode_digit_is_refused_and_audited(
    server: LiveServer,
) -> None:
    with server.client("operator") as client:
        response = client.post(
            "/v1/identify", data={**SEARCH, "case_ref": "EDGE-FACE", "face": "²"},
            files={"image": (PROBE.name, PROBE.read_bytes(), "image/jpeg")},
        )
    body = assert_problem(response, 422, "validation-error")
    assert "'face' field" in str(body["detail"])
    events = refused_events(server, route="/v1/identify", status=422,
                            actor=f"key:{server.key_ids['operator']}",
                            case_ref="EDGE-FACE")
    assert len(events) == 1 and events[0]["problem"] == "/problems/validation-error"


def test_parse_face_turns_a_bare_value_error_into_a_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(text: str) -> int:
        return int(text)  # ValueError, as an unconvertible number once did

    monkeypatch.setattr("facetrust.service.inputs.parse_face_policy", fails)
    with pytest.raises(Problem) as refused:
        parse_face("x")
    assert refused.value.problem.slug == "validation-error"
    assert "'face' field" in refused.value.detail and "'x'" in refused.value.detail


SEARCHES = {"identify": ("/v1/identify", ("image",)),
            "verify-photos": ("/v1/verify", ("image_a", "image_b")),
            "verify-subject": ("/v1/subjects/s-edge/verify", ("image",))}
REPEATED = [(search, field) for search in SEARCHES for field in ("purpose", "case_ref", "face")]
REPEATED.append(("identify", "k"))
TWO_VALUES = {"purpose": ["boarding", "access-control"], "case_ref": ["A-1", "A-2"],
              "k": ["1", "5"], "face": ["single", "largest"]}


@pytest.mark.parametrize("search,field", REPEATED, ids=[f"{s}-{f}" for s, f in REPEATED])
def test_a_repeated_search_field_is_refused_not_read_as_its_last_copy(
    server: LiveServer, search: str, field: str,
) -> None:
    route, images = SEARCHES[search]
    uploads = {name: (PROBE.name, PROBE.read_bytes(), "image/jpeg") for name in images}
    with server.client("operator") as client:
        response = client.post(route, data={**SEARCH, field: TWO_VALUES[field]}, files=uploads)
    body = assert_problem(response, 422, "validation-error")
    assert f"2 '{field}' parts" in str(body["detail"]) and body["field"] == field


def test_a_repeated_enrolment_field_is_refused(server: LiveServer) -> None:
    with server.client("enroller") as client:
        response = client.post(
            "/v1/subjects/s-edge/enrolments", data={"face": TWO_VALUES["face"]},
            files={"photo": (PROBE.name, PROBE.read_bytes(), "image/jpeg")},
        )
    assert_problem(response, 422, "validation-error")
    assert "2 'face' parts" in response.text


# -- review reads ---------------------------------------------------------------------


@pytest.mark.parametrize("path,route", [
    ("/v1/identifications/edge-none", "/v1/identifications/{identification_id}"),
    ("/v1/reviews", "/v1/reviews"),
])
def test_refused_reads_of_a_review_case_and_the_queue_are_audited(
    server: LiveServer, path: str, route: str,
) -> None:
    with server.client() as anonymous:
        assert_problem(anonymous.get(path), 401, "unauthorized")
    with server.client("auditor") as auditor:
        assert_problem(auditor.get(path), 403, "forbidden")
    assert refused_events(server, route=route, status=401, actor="anonymous")
    forbidden = refused_events(server, route=route, status=403,
                               actor=f"key:{server.key_ids['auditor']}")
    assert len(forbidden) == 1 and forbidden[0]["method"] == "GET"


# -- subject ids in the path ----------------------------------------------------------


@pytest.mark.parametrize("raw", ["a%0Ab", "%00", "%C3%9F", "%F0%9F%98%80"])
def test_a_subject_id_outside_the_grammar_is_an_invalid_parameter(
    server: LiveServer, raw: str,
) -> None:
    with server.client("enroller") as client:
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/v1/subjects/{raw}")
            body = assert_problem(response, 422, "invalid-parameter")
            assert "letters A-Z and a-z, digits" in str(body["detail"]), method
        listed = client.get(f"/v1/subjects/{raw}/consents")
        assert_problem(listed, 422, "invalid-parameter")
    with server.client("operator") as client:
        response = client.post(
            f"/v1/subjects/{raw}/verify", data=SEARCH,
            files={"image": (PROBE.name, PROBE.read_bytes(), "image/jpeg")},
        )
    assert_problem(response, 422, "invalid-parameter")
    with server.client() as anonymous:  # the key is checked first
        assert_problem(anonymous.get(f"/v1/subjects/{raw}"), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/v1/" + "x" * 60_000, "/v1/subjects/" + "s" * 60_000])
def test_a_problem_echoes_at_most_a_bounded_start_of_a_huge_path(
    server: LiveServer, path: str,
) -> None:
    """A 60 KB path was echoed whole in the problem's ``instance`` (and in the server
    log of an unexpected error): now its start, with its length."""
    with server.client("enroller") as client:
        answers = [client.get(path), client.delete(path)]
    with server.client() as anonymous:
        answers.append(anonymous.get(path))
    for response in answers:
        assert response.headers["content-type"] == "application/problem+json", response.text
        assert len(response.content) < 2_000, (response.status_code, len(response.content))
        body = response.json()
        assert len(body["instance"]) <= 200
        assert body["instance"].startswith(path[:100])
        assert f"{len(path):,} characters" in body["instance"]


def test_a_well_formed_unknown_subject_id_is_still_unknown(server: LiveServer) -> None:
    with server.client("enroller") as client:
        assert_problem(client.get("/v1/subjects/s-nobody-here"), 404, "unknown-subject")


def test_many_first_uses_of_one_key_at_once_share_one_check(server: LiveServer) -> None:
    """Clients that start together (or a replica restarted under load) present a key
    not yet verified in this process, more times at once than the failure burst."""
    clients = 4 * FAILURE_BURST
    start = threading.Barrier(clients)
    statuses: list[int] = []

    def first_use() -> None:
        with from_address(server, "127.0.0.6", server.keys["crowd"]) as client:
            start.wait()
            statuses.append(client.get("/v1/me").status_code)

    threads = [threading.Thread(target=first_use) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * clients, statuses


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer not-a-key"])
def test_a_write_without_a_well_formed_key_is_refused_before_its_body_is_read(
    server: LiveServer, authorization: str | None
) -> None:
    """The request line and headers go out, then the server must answer without
    waiting for the body (which is never sent)."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    head = ["POST /v1/identify HTTP/1.1", f"Host: {host}",
            "Content-Type: multipart/form-data; boundary=x", "Content-Length: 1000000"]
    if authorization:
        head.append(f"Authorization: {authorization}")
    with socket.create_connection((host, int(port)), timeout=10,
                                  source_address=("127.0.0.7", 0)) as raw:
        raw.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        received = b""
        while chunk := raw.recv(4096):  # the server closes the connection after answering
            received += chunk
        answer = received.decode("latin-1")
    assert answer.startswith("HTTP/1.1 401"), answer[:200]
    assert "application/problem+json" in answer and "unauthorized" in answer


# -- image caps -------------------------------------------------------------------------

#: The library's caps the operator lowered below the service's (25 MP; the test server's
#: 2 MiB body cap): the stricter of the two must win.
LOWER_CAPS = {"FACETRUST_MAX_PIXELS": "2000000", "FACETRUST_MAX_BYTES": "300000"}


def colin_at(side: int, quality: int) -> bytes:
    """A real photo (Colin Powell's first sample) scaled to ``side`` x ``side``, as JPEG."""
    from PIL import Image

    scaled = io.BytesIO()
    with Image.open(PROBE) as image:
        image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS).save(
            scaled, "JPEG", quality=quality)
    return scaled.getvalue()


def test_the_librarys_lower_image_caps_win_over_the_services(tmp_path: Path) -> None:
    """An operator who set FACETRUST_MAX_PIXELS (or FACETRUST_MAX_BYTES) below the
    service's caps gets those: a photo over them is refused (413 image-too-large,
    audited), one under them accepted."""
    over_pixels = colin_at(1500, 75)  # 2.25 MP, 89 kB
    over_bytes = colin_at(1400, 100)  # 1.96 MP, 420 kB
    under = colin_at(1400, 80)  # 1.96 MP, 91 kB
    assert len(over_pixels) < 300_000 < len(over_bytes) < MAX_BODY_BYTES
    assert len(under) < 300_000
    server = start_server(tmp_path, {"operator": Role.OPERATOR, "auditor": Role.AUDITOR},
                          LOWER_CAPS)
    try:
        other = photo("Colin_Powell", 2).read_bytes()
        with server.client("operator") as operator:
            def verify(image: bytes, case_ref: str) -> httpx.Response:
                return operator.post("/v1/verify", data={**SEARCH, "case_ref": case_ref},
                                     files={"image_a": ("a.jpg", image, "image/jpeg"),
                                            "image_b": ("b.jpg", other, "image/jpeg")})

            for image, case_ref, cap in ((over_pixels, "CAP-PIXELS", "2,000,000-pixel cap"),
                                         (over_bytes, "CAP-BYTES", "300,000-byte cap")):
                detail = str(assert_problem(verify(image, case_ref), 413,
                                            "image-too-large")["detail"])
                assert cap in detail, detail
            accepted = verify(under, "CAP-UNDER")
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["match"] is True
            limits = operator.get("/v1/policy").json()["limits"]
        assert (limits["max_pixels"], limits["max_image_bytes"]) == (2_000_000, 300_000)
        with server.client("auditor") as auditor:
            refused = auditor.get("/v1/audit/events", params={
                "kind": "verify.photos.refused"}).json()["events"]
        assert sorted((e["case_ref"], e["error"]) for e in refused) == [
            ("CAP-BYTES", "ImageTooLarge"), ("CAP-PIXELS", "ImageTooLarge")]
        # the start recorded the caps it enforces, not the service's configured ones
        with server.client("auditor") as auditor:
            exported = auditor.get("/v1/audit/export", params={"kind": "policy.changed"})
        (started,) = [json.loads(line) for line in exported.text.splitlines()]
        recorded = started["policy"]["limits"]
        assert (recorded["max_pixels"], recorded["max_image_bytes"]) == (2_000_000, 300_000)
        assert recorded["max_body_bytes"] == MAX_BODY_BYTES  # the request body cap
    finally:
        stop_server(server)
