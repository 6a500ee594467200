"""What a hostile client meets, through a real server on loopback: refusals that name a
huge subject id in the path, a body trickled past the request timeout, an endless header
block, and connections that never finish their headers."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from facetrust.service import Role
from facetrust.service.protocol import HEADER_TIMEOUT_S

from .conftest import LiveServer, start_server, stop_server

pytestmark = pytest.mark.service

KEYS = {"enroller": Role.ENROLLER, "operator": Role.OPERATOR, "auditor": Role.AUDITOR}
#: The test server's request timeout (seconds): short, so a trickled body times out soon.
REQUEST_TIMEOUT_S = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(
        tmp_path_factory.mktemp("hostile"), KEYS,
        env={"FACETRUST_SERVICE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)},
    )
    yield started
    stop_server(started)


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer: its status line and headers, then its ``Content-Length`` bytes."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
        received += chunk
    if not received:
        return b""  # closed without a word
    head, _, body = received.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_refusal_events_copy_at_most_200_characters_of_a_subject_id_in_the_path(
    server: LiveServer,
) -> None:
    long_id = "a" * 50_000
    before = server.audit_head()
    with server.client() as anonymous:
        assert anonymous.get(f"/v1/subjects/{long_id}").status_code == 401
    with server.client("enroller") as enroller:
        assert enroller.get(f"/v1/subjects/{long_id}").status_code == 422
        assert enroller.delete(f"/v1/subjects/{long_id}").status_code == 422
    added = server.events_after(before)
    refused = [e for e in added if e["kind"] == "service.refused"]
    assert {e["status"] for e in refused} == {401, 422}, added
    assert len(refused) == 3, added
    for event in added:
        assert len(json.dumps(event)) < 2_000, event["kind"]
        for subject_id in event["subject_ids"]:
            assert subject_id.startswith("aaaa"), event
            assert subject_id.endswith("(cut: 50,000 characters)"), event


def test_a_biometric_request_whose_body_trickles_past_the_timeout_is_audited(
    server: LiveServer,
) -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\naccess-control\r\n'
            b'--b\r\nContent-Disposition: form-data; name="case_ref"\r\n\r\nslow-1\r\n--b--\r\n')
    before = server.audit_head()
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n"
            % (server.keys["operator"].encode(), len(body) + 100)
        )
        sock.sendall(body[:20])  # and nothing more: the rest never comes
        started = time.monotonic()
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b"/problems/request-timeout" in answer, answer
    assert waited < REQUEST_TIMEOUT_S + 10
    deadline = time.monotonic() + 10  # a 503's event is written just after the answer
    while not (refused := [e for e in server.events_after(before)
                           if e["kind"] == "service.refused"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(refused) == 1, refused
    assert refused[0]["route"] == "/v1/identify"
    assert refused[0]["status"] == 503
    assert refused[0]["problem"] == "/problems/request-timeout"
    assert refused[0]["presented_key_id"] == server.key_ids["operator"]


def test_a_header_block_past_64_kib_is_refused_431_before_it_is_all_read(
    server: LiveServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        sent = 0
        with contextlib.suppress(ConnectionError):  # the server closes it once it has answered
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
            sock.sendall(b"\r\n\r\n")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"/problems/headers-too-large" in answer, answer
    assert b"cache-control: no-store\r\n" in answer.lower(), answer  # as every answer's
    assert sent < 8 * 1024 * 1024, sent  # refused early, not after the whole block
    with server.client() as anonymous:  # and the server is still there for others
        assert anonymous.get("/healthz").status_code == 200


@pytest.mark.parametrize("sent", [b"", b"POST /v1/identify HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "half-a-header"])
def test_a_connection_that_never_finishes_its_headers_is_closed(
    server: LiveServer, sent: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT_S + 15)
        try:
            answer = read_answer(sock)
        except TimeoutError:
            pytest.fail("the server kept the connection open")
        waited = time.monotonic() - started
    assert HEADER_TIMEOUT_S - 1 < waited < HEADER_TIMEOUT_S + 5, waited
    if sent:
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"/problems/header-timeout" in answer, answer
    else:
        assert answer == b""  # closed without a word: no request was started


def test_console_cookies_are_secure_when_the_console_is_reached_over_https(
    server: LiveServer,
) -> None:
    # A TLS proxy in front (deploy/nginx) says so with X-Forwarded-Proto, trusted from
    # 127.0.0.1; the server was started without --secure-cookies.
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-Proto": "https"}) as browser:
        form = browser.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token, form.text
        browser.cookies.clear()  # sent by hand: httpx keeps a Secure cookie off http://
        logged_in = browser.post(
            "/console/login", data={"api_key": server.keys["operator"],
                                    "login_csrf": token.group(1)},
            headers={"Cookie": f"facetrust_login_csrf={token.group(1)}"},
        )
    assert logged_in.status_code == 303, logged_in.text
    cookies = [*form.headers.get_list("set-cookie"), *logged_in.headers.get_list("set-cookie")]
    issued = [c for c in cookies if "Max-Age=0" not in c]  # not the ones being deleted
    assert {c.split("=")[0] for c in issued} == {"facetrust_login_csrf", "facetrust_session"}
    for cookie in issued:
        assert "; Secure" in cookie, cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
