"""Parts of the service that need no server: keys, rate limit, problems, timeouts, settings."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from facetrust.errors import (
    ApiKeyRowInvalid,
    FacetrustError,
    InvalidParameter,
    NoFaceFound,
    StoreError,
    StoreUnavailable,
)
from facetrust.service import ApiKeys, Role, ServiceSettings, SqliteApiKeyStore
from facetrust.service.buckets import SqlBuckets
from facetrust.service.limits import FailureThrottle, RequestTimeout, TokenBucket
from facetrust.service.problems import LIBRARY_PROBLEMS, catalogue, install_handlers, problem_of
from facetrust.service.refusals import FULL_PER_MINUTE, FULL_PER_MINUTE_OF_A_KEY, FloodCounter
from facetrust.service.server import share_cores
from facetrust.service.service_db import open_service_database
from facetrust.service.sessions import ConsoleSessions

#: Seals the key rows of the tests without a gallery (a gallery derives its own).
ROW_KEY = b"row key of the unit tests......."


@pytest.fixture()
def keys(tmp_path: Path) -> ApiKeys:
    return ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), row_key=ROW_KEY)


def test_a_key_is_shown_once_and_checked_against_its_hash(keys: ApiKeys) -> None:
    created = keys.create("operator", "gate 3", created_by="test")
    assert created.key.startswith(f"ft_{created.record.key_id}_")
    found = keys.authenticate(created.key)
    assert found is not None and found.role is Role.OPERATOR and found.name == "gate 3"
    stored = keys.store.get(created.record.key_id)
    assert stored is not None and stored.key_hash.startswith("$argon2id$")
    assert created.key.split("_", 2)[2] not in stored.key_hash


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
    first = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), row_key=ROW_KEY)
    second = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), row_key=ROW_KEY)
    created = first.create("enroller", "desk", created_by="test")
    assert second.authenticate(created.key) is not None
    first.revoke(created.record.key_id)
    assert second.authenticate(created.key) is None


def test_unknown_role_and_empty_name_are_refused(keys: ApiKeys) -> None:
    with pytest.raises(InvalidParameter, match="'role' must be one of enroller, operator"):
        keys.create("root", "x", created_by="test")
    with pytest.raises(InvalidParameter, match="'name' of a key"):
        keys.create("admin", "  ", created_by="test")


def test_a_key_row_changed_or_added_without_the_row_key_is_refused_without_argon2(
    tmp_path: Path,
) -> None:
    hasher = CountingHasher()
    keys = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), hasher, row_key=ROW_KEY)
    created = keys.create("auditor", "desk", created_by="test")
    key_id = created.record.key_id
    assert keys.authenticate(created.key) is not None
    database = keys.store.database  # type: ignore[attr-defined]
    with database.write():
        database.execute("UPDATE api_keys SET role = 'admin' WHERE key_id = ?", (key_id,))
    CountingHasher.verifications = 0
    with pytest.raises(ApiKeyRowInvalid, match="does not fit its seal") as raised:
        keys.authenticate(created.key)  # remembered, but the row changed
    assert raised.value.problem == "api-key-row-tampered" and raised.value.key_id == key_id
    with pytest.raises(ApiKeyRowInvalid):
        keys.authenticate(created.key)
    assert CountingHasher.verifications == 0
    assert [k.key_id for k in keys.tampered()] == [key_id]
    # another row key (another gallery's) does not fit either
    other = ApiKeys(keys.store, row_key=b"another gallery's row key......")
    with database.write():
        database.execute("UPDATE api_keys SET role = 'auditor' WHERE key_id = ?", (key_id,))
    assert keys.authenticate(created.key) is not None
    with pytest.raises(ApiKeyRowInvalid):
        other.verify(key_id, created.key.split("_", 2)[2])


def test_a_revocation_is_sealed_and_unsealed_rows_are_sealed_only_as_listed(
    tmp_path: Path,
) -> None:
    keys = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), row_key=ROW_KEY, audit=None)
    made = [keys.create("operator", name, created_by="test") for name in ("a", "b", "c")]
    database = keys.store.database  # type: ignore[attr-defined]
    keys.revoke(made[0].record.key_id)
    with database.write():
        database.execute("UPDATE api_keys SET revoked_at = NULL WHERE key_id = ?",
                         (made[0].record.key_id,))
        database.execute("UPDATE api_keys SET row_mac = NULL WHERE key_id <> ?",
                         (made[0].record.key_id,))
    with pytest.raises(ApiKeyRowInvalid, match="does not fit"):
        keys.authenticate(made[0].key)
    with pytest.raises(ApiKeyRowInvalid, match="facetrust keys seal"):
        keys.authenticate(made[1].key)
    with pytest.raises(StoreError, match="2 active API key.*facetrust keys seal"):
        keys.require_sealed()
    listed = keys.unsealed()
    assert [k.name for k in listed] == ["b", "c"]
    with database.write():  # changed after it was listed: not sealed
        database.execute("UPDATE api_keys SET role = 'admin' WHERE key_id = ?",
                         (made[2].record.key_id,))
    events: list[tuple[str, dict[str, Any]]] = []
    keys.audit = lambda kind, **fields: events.append((kind, fields))
    assert [k.name for k in keys.seal(listed, sealed_by="cli:test")] == ["b"]
    assert events == [("apikey.seal", {**events[0][1], "key_ids": [made[1].record.key_id]})]
    assert keys.authenticate(made[1].key) is not None
    with pytest.raises(ApiKeyRowInvalid):
        keys.authenticate(made[2].key)
    keys.revoke(made[2].record.key_id)  # an unsealed row can still be revoked
    keys.require_sealed()  # no active unsealed row is left


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0.0  # buckets are per key
    now[0] += 1.0
    assert bucket.take("a") == 0.0


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_buckets_in_the_service_database_are_one_limit_for_every_process(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    now = [1000.0]
    target = (
        str(tmp_path / "keys.db") if engine == "sqlite"
        else request.getfixturevalue("postgres_url")()
    )
    processes = [open_service_database(target) for _ in range(2)]
    buckets = [
        TokenBucket(per_minute=60, burst=3, clock=lambda: now[0], buckets=SqlBuckets(db))
        for db in processes
    ]
    throttles = [
        FailureThrottle(per_minute=6, burst=2, clock=lambda: now[0], buckets=SqlBuckets(db))
        for db in processes
    ]
    assert [buckets[n % 2].take("a") for n in range(3)] == [0.0, 0.0, 0.0]
    assert buckets[1].take("a") == pytest.approx(1.0)  # one bucket, not one per process
    now[0] += 1.0
    assert buckets[0].take("a") == 0.0
    assert throttles[0].reserve("10.0.0.1") == 0.0
    assert throttles[1].reserve("10.0.0.1") == 0.0
    assert throttles[0].reserve("10.0.0.1") == pytest.approx(10.0)  # one bucket for both
    assert throttles[1].reserve("10.0.0.2") == 0.0
    assert throttles[1].reserve("10.0.0.1") == pytest.approx(10.0)  # a refusal takes nothing
    now[0] += 10.0
    assert throttles[0].reserve("10.0.0.1") == 0.0
    for db in processes:
        db.close()


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


class CountingHasher(PasswordHasher):
    """argon2id as configured, counting the verifications it is asked for."""

    verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:  # noqa: A002
        CountingHasher.verifications += 1
        return super().verify(hash, password)


def test_malformed_keys_and_unknown_ids_never_reach_argon2(tmp_path: Path) -> None:
    hasher = CountingHasher()
    keys = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), hasher, row_key=ROW_KEY)
    created = keys.create("operator", "desk", created_by="test")
    CountingHasher.verifications = 0
    unknown_id = "ft_" + "0" * 16 + created.key[19:]
    for presented in ("nonsense", "ft__", unknown_id, created.key + "x", " " * 500):
        assert keys.authenticate(presented) is None
    assert CountingHasher.verifications == 0
    wrong = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    assert keys.authenticate(wrong) is None  # a known id: argon2 decides
    assert CountingHasher.verifications == 1


def test_a_verified_key_is_remembered_briefly_and_revocation_is_immediate(
    tmp_path: Path,
) -> None:
    now = [0.0]
    hasher = CountingHasher()
    keys = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), hasher, row_key=ROW_KEY,
                   cache_s=60, clock=lambda: now[0])
    other_process = ApiKeys(SqliteApiKeyStore(tmp_path / "keys.db"), row_key=ROW_KEY)
    created = keys.create("auditor", "desk", created_by="test")
    CountingHasher.verifications = 0
    assert keys.authenticate(created.key) is not None
    assert keys.authenticate(created.key) is not None
    assert CountingHasher.verifications == 1  # the second came from memory
    now[0] += 61
    assert keys.authenticate(created.key) is not None
    assert CountingHasher.verifications == 2  # the memory expired
    other_process.revoke(created.record.key_id)
    assert keys.authenticate(created.key) is None  # remembered, but revoked elsewhere


def test_failure_throttle_blocks_after_the_burst_and_recovers() -> None:
    now = [0.0]
    throttle = FailureThrottle(per_minute=6, burst=2, clock=lambda: now[0])
    assert throttle.reserve("10.0.0.1") == 0.0
    throttle.give_back("10.0.0.1")  # an attempt that succeeded costs nothing
    assert throttle.reserve("10.0.0.1") == 0.0
    assert throttle.reserve("10.0.0.1") == 0.0
    assert throttle.reserve("10.0.0.1") == pytest.approx(10.0)
    assert throttle.reserve("10.0.0.2") == 0.0  # per name
    now[0] += 10.0
    assert throttle.reserve("10.0.0.1") == 0.0


def test_failure_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(per_minute=1, burst=1, max_names=100)
    for n in range(1000):
        throttle.reserve(f"10.0.{n // 256}.{n % 256}")
    assert throttle.reserve("10.0.3.231") > 0  # the newest are kept
    assert sum(throttle.reserve(f"10.0.{n // 256}.{n % 256}") > 0 for n in range(1000)) <= 101


def test_identical_anonymous_refusals_are_counted_per_minute() -> None:
    now = [120.0]
    floods = FloodCounter(clock=lambda: now[0])
    admitted = [floods.admit("anonymous", "/v1/identify", 401, "/problems/unauthorized")
                for _ in range(100)]
    assert admitted == [True] * FULL_PER_MINUTE + [False] * (100 - FULL_PER_MINUTE)
    keyed = [floods.admit("key:abc", "/v1/identify", 403, "/problems/forbidden")
             for _ in range(100)]
    assert keyed.count(True) == FULL_PER_MINUTE_OF_A_KEY  # a key has a larger allowance
    assert floods.due() == []  # the minute is not over
    now[0] += 60
    assert floods.admit("anonymous", "/v1/identify", 401, "/problems/unauthorized")
    summaries = {s["actor"]: s for s in floods.due()}
    assert summaries["anonymous"]["count"] == 100 - FULL_PER_MINUTE
    assert summaries["key:abc"]["count"] == 100 - FULL_PER_MINUTE_OF_A_KEY
    assert summaries["anonymous"]["minute"] == "1970-01-01T00:02:00+00:00"


def test_console_sessions_expire_when_idle_and_at_their_age(tmp_path: Path) -> None:
    now = [1000.0]
    sessions = ConsoleSessions(tmp_path / "keys.db", row_key=ROW_KEY, idle_s=600, max_age_s=3600,
                               clock=lambda: now[0])
    token, session = sessions.open("k1")
    assert sessions.get(token) == session
    now[0] += 599
    assert sessions.get(token) is not None  # used: the idle clock restarts
    now[0] += 599
    assert sessions.get(token) is not None
    now[0] += 601
    assert sessions.get(token) is None  # idle too long
    token, _ = sessions.open("k1")
    for _ in range(7):
        now[0] += 550
        sessions.get(token)
    assert sessions.get(token) is None  # past its age, however busy
    other, _ = sessions.open("k2")
    assert sessions.end_all("k2") == 1 and sessions.get(other) is None


def test_server_workers_share_the_cores_unless_threads_are_set() -> None:
    cores = os.cpu_count() or 1
    environ: dict[str, str] = {}
    share_cores(2, environ)
    assert environ["FACETRUST_EMBEDDER_THREADS"] == str(max(1, cores // 2))
    many: dict[str, str] = {"FACETRUST_EMBEDDER_THREADS": "0"}
    share_cores(cores * 4, many)
    assert many["FACETRUST_EMBEDDER_THREADS"] == "1"
    chosen = {"FACETRUST_EMBEDDER_THREADS": "3"}
    share_cores(2, chosen)
    assert chosen["FACETRUST_EMBEDDER_THREADS"] == "3"


def test_a_key_whose_creation_cannot_be_audited_is_never_stored(tmp_path: Path) -> None:
    # The audit log's database failing is simulated (the hook raises what the store
    # raises when it does not answer); the key store is real.
    events: list[tuple[str, dict[str, Any]]] = []

    def unwritable(kind: str, **fields: Any) -> None:
        raise StoreUnavailable("The gallery's database did not answer. Retry shortly.")

    keys = ApiKeys(SqliteApiKeyStore(tmp_path / "api-keys.db"), row_key=ROW_KEY,
                   audit=unwritable)
    with pytest.raises(StoreUnavailable):
        keys.create("operator", "never audited", created_by="cli:tests")
    assert keys.list() == []
    keys.audit = lambda kind, **fields: events.append((kind, fields))
    made = keys.create("operator", "audited", created_by="cli:tests")
    assert [k.key_id for k in keys.list()] == [made.record.key_id]
    assert [(kind, f["key_id"]) for kind, f in events] == [("apikey.create", made.record.key_id)]


def test_an_unexpected_error_on_a_console_page_is_a_console_page_without_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import re

    from facetrust.gallery import Gallery
    from facetrust.service.app import create_app

    gallery = Gallery.init_folder(tmp_path / "g")[0]
    store = SqliteApiKeyStore(tmp_path / "g" / "api-keys.db")
    key = ApiKeys.for_gallery(gallery, store).create(Role.AUDITOR, "auditor", created_by="tests")
    store.close()
    gallery.close()
    app = create_app(ServiceSettings(gallery=str(tmp_path / "g")))

    async def boom() -> None:  # a fault no request can cause on purpose any more
        raise RuntimeError("secret internals")

    app.add_api_route("/console/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        login = client.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', login.text)
        assert token is not None
        client.post("/console/login", data={"api_key": key.key, "login_csrf": token[1]})
        response = client.get("/console/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in response.text and "secret internals" not in response.text
    assert response.headers["X-Request-Id"]
    assert "secret internals" in caplog.text  # in the server log instead
