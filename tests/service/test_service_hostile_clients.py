"""What a hostile client meets, through a real server on loopback: refusals that name a
huge subject id in the path, a body trickled past the request timeout, an endless header
block, and connections that never finish their headers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from facetrust.service import Role

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


def head(server: LiveServer) -> int:
    with server.client("auditor") as auditor:
        return int(auditor.get("/v1/audit/head").json()["seq"])


def events_after(server: LiveServer, seq: int) -> list[dict[str, Any]]:
    with server.client("auditor") as auditor:
        found = auditor.get("/v1/audit/events", params={"offset": seq, "limit": 1000})
        assert found.status_code == 200, found.text
        assert auditor.get("/v1/audit/verify").json()["ok"]
    return [e for e in found.json()["events"] if e["seq"] > seq]


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or 30 s pass)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_refusal_events_copy_at_most_200_characters_of_a_subject_id_in_the_path(
    server: LiveServer,
) -> None:
    long_id = "a" * 50_000
    before = head(server)
    with server.client() as anonymous:
        assert anonymous.get(f"/v1/subjects/{long_id}").status_code == 401
    with server.client("enroller") as enroller:
        assert enroller.get(f"/v1/subjects/{long_id}").status_code == 422
        assert enroller.delete(f"/v1/subjects/{long_id}").status_code == 422
    added = events_after(server, before)
    refused = [e for e in added if e["kind"] == "service.refused"]
    assert {e["status"] for e in refused} == {401, 422}, added
    assert len(refused) == 3, added
    for event in added:
        assert len(json.dumps(event)) < 2_000, event["kind"]
        for subject_id in event["subject_ids"]:
            assert subject_id.startswith("aaaa"), event
            assert subject_id.endswith("(cut: 50,000 characters)"), event

