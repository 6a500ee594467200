"""Parts of the service that need no server: keys, rate limit, problems, timeouts, settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from facetrust.errors import FacetrustError, InvalidParameter, NoFaceFound
from facetrust.service import ApiKeys, Role, ServiceSettings, SqliteApiKeyStore
from facetrust.service.limits import RequestTimeout, TokenBucket
from facetrust.service.problems import LIBRARY_PROBLEMS, catalogue, install_handlers, problem_of


@pytest.fixture()
def keys(tmp_path: Path) -> ApiKeys:
    return ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"))


def test_a_key_is_shown_once_and_checked_against_its_hash(keys: ApiKeys) -> None:
    created = keys.create("operator", "gate 3", created_by="test")
    assert created.key.startswith(f"ft_{created.record.key_id}_")
    found = keys.authenticate(created.key)
    assert found is not None and found.role is Role.OPERATOR and found.name == "gate 3"
    stored = keys.store.get(created.record.key_id)
    assert stored is not None and stored[1].startswith("$argon2id$")
    assert created.key.split("_", 2)[2] not in stored[1]


def test_wrong_malformed_and_revoked_keys_are_refused(keys: ApiKeys) -> None:
    created = keys.create(Role.AUDITOR, "auditor", created_by="test")
    assert keys.authenticate(created.key) is not None  # now remembered
    assert keys.authenticate(created.key + "x") is None
    assert keys.authenticate(created.key.replace("ft_", "xx_")) is None
    assert keys.authenticate("ft__") is None
    keys.revoke(created.record.key_id)
    assert keys.authenticate(created.key) is None
    with pytest.raises(InvalidParameter, match="No active API key"):
        keys.revoke(created.record.key_id)


def test_revocation_is_seen_by_another_process_store(tmp_path: Path) -> None:
    first = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"))
    second = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"))
    created = first.create("enroller", "desk", created_by="test")
    assert second.authenticate(created.key) is not None
    first.revoke(created.record.key_id)
    assert second.authenticate(created.key) is None


def test_unknown_role_and_empty_name_are_refused(keys: ApiKeys) -> None:
    with pytest.raises(InvalidParameter, match="'role' must be one of enroller, operator"):
        keys.create("root", "x", created_by="test")
    with pytest.raises(InvalidParameter, match="'name' of a key"):
        keys.create("admin", "  ", created_by="test")


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0.0  # buckets are per key
    now[0] += 1.0
    assert bucket.take("a") == 0.0


def test_every_library_error_has_one_stable_problem_type() -> None:
    assert problem_of(NoFaceFound("x")).uri == "/problems/no-face-found"
    assert problem_of(FacetrustError("x")).uri == "/problems/facetrust-error"
    kinds = [kind for kind, _ in LIBRARY_PROBLEMS]
    for index, kind in enumerate(kinds):  # no entry is shadowed by an earlier, broader one
        assert not any(issubclass(kind, earlier) for earlier in kinds[:index]), kind
    slugs = [p["type"] for p in catalogue()]
    assert len(slugs) == len(set(slugs))


def test_unexpected_errors_become_problems_without_a_traceback() -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["type"] == "/problems/internal-error"
    assert "secret internals" not in response.text and "Traceback" not in response.text


def test_slow_requests_are_answered_503_after_the_timeout() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(5)

    response = TestClient(RequestTimeout(slow, seconds=0.05)).get("/anything")
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/request-timeout"


def test_settings_come_from_the_environment_and_are_validated() -> None:
    settings = ServiceSettings.from_env(
        {"FACETRUST_SERVICE_MAX_BODY_BYTES": "1000", "FACETRUST_SERVICE_SECURE_COOKIES": "true"}
    )
    assert settings.max_body_bytes == 1000 and settings.secure_cookies is True
    with pytest.raises(InvalidParameter, match="'identify_burst' service setting"):
        ServiceSettings(identify_burst=0)
