"""API key rows are sealed to the gallery: someone who can write the service
database but holds no master key cannot add, widen or revive a key.

Each test runs on a SQLite service database (``api-keys.db``) and on a
PostgreSQL one (a PostgreSQL gallery's own database), with real servers on
loopback and the installed ``facetrust`` command.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from facetrust.gallery import Gallery
from installed_command import INSTALLED, installed_runner, shell_env

from .conftest import LiveServer, free_port, launch_server, stop_server
from .test_service_sessions import log_in

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: The service database's key table as facetrust wrote it before rows were sealed.
PRE_UPGRADE_SCHEMA = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT,
    key_hash TEXT NOT NULL
)
"""


@dataclass
class ServiceDb:
    """A gallery folder and raw SQL access to its service database, as a database
    writer without the master key would have it."""

    folder: Path
    url: str | None  # the PostgreSQL gallery's (and service database's) URL

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.url is None:
            with sqlite3.connect(self.folder / "api-keys.db") as db:
                return db.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql.replace("?", "%s").encode(), params)
            return cursor.fetchall() if cursor.description else []

    def forge(self, role: str, *, revoked_at: str | None = None) -> tuple[str, str]:
        """A key row inserted directly, for a secret the writer knows: (key id, key)."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        self.execute(
            "INSERT INTO api_keys (key_id, role, name, created_at, created_by, revoked_at, "
            "key_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, role, "forged", datetime.now(UTC).isoformat(), "cli:admin", revoked_at,
             PasswordHasher().hash(secret)),
        )
        return key_id, f"ft_{key_id}_{secret}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def make_gallery(request: pytest.FixtureRequest) -> Callable[[Path], ServiceDb]:
    """Makes a gallery in a folder: SQLite files, or PostgreSQL databases."""
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None

    def make_url() -> str:
        import psycopg

        name = f"keyrows_{secrets.token_hex(6)}"
        with psycopg.connect(postgres.get_uri(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        return str(postgres.get_uri(database=name))

    def make(folder: Path) -> ServiceDb:
        url = None if postgres is None else make_url()
        options = {} if url is None else {"database_url": url, "keystore_url": make_url()}
        Gallery.init_folder(folder, **options)[0].close()
        return ServiceDb(folder, url)

    return make


def cli_key(folder: Path, role: str, name: str) -> dict[str, Any]:
    """A key made with the installed `facetrust keys create --json`."""
    made = installed_runner(folder)("keys", "create", "--role", role, "--name", name, "--json")
    record: dict[str, Any] = json.loads(made.stdout)
    return record


def audit_events(server: LiveServer, kind: str) -> list[dict[str, Any]]:
    with server.client("auditor") as auditor:
        response = auditor.get("/v1/audit/events", params={"kind": kind, "limit": "1000"})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def refused_rows(server: LiveServer, key_id: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(server, "apikey.refused") if e["key_id"] == key_id]


def status_of(server: LiveServer, key: str, path: str = "/v1/me") -> int:
    response = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {key}"},
                         timeout=60)
    return response.status_code


@dataclass
class Served:
    server: LiveServer
    db: ServiceDb


@pytest.fixture(scope="module")
def served(
    make_gallery: Callable[[Path], ServiceDb], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    db = make_gallery(tmp_path_factory.mktemp("key-rows") / "gallery")
    made = {name: cli_key(db.folder, role, name)
            for name, role in (("admin", "admin"), ("auditor", "auditor"),
                               ("escalating", "auditor"), ("revoked", "operator"))}
    server = launch_server(db.folder, {n: r["key"] for n, r in made.items()},
                           {n: r["key_id"] for n, r in made.items()})
    yield Served(server, db)
    stop_server(server)


def test_a_key_row_inserted_by_a_database_writer_is_refused_and_audited(
    served: Served,
) -> None:
    server, db = served.server, served.db
    key_id, forged = db.forge("operator")
    unknown = f"ft_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    for path in ("/v1/me", "/v1/reviews"):
        refused = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {forged}"})
        as_unknown = httpx.get(f"{server.url}{path}",
                               headers={"Authorization": f"Bearer {unknown}"})
        assert refused.status_code == 401, refused.text
        # no hint to the client that the row exists but is refused
        assert refused.json()["detail"] == as_unknown.json()["detail"]
        assert "seal" not in refused.text and "tamper" not in refused.text
    events = refused_rows(server, key_id)
    assert events and {e["problem"] for e in events} == {"api-key-row-unsealed"}
    assert events[0]["status"] == 401 and events[0]["actor"] == "anonymous"

    # the same with a made-up seal: refused, and named as altered for the auditor
    other_id, other = db.forge("admin")
    db.execute("UPDATE api_keys SET row_mac = ? WHERE key_id = ?", ("ab" * 32, other_id))
    assert status_of(server, other, "/v1/keys") == 401
    assert {e["problem"] for e in refused_rows(server, other_id)} == {"api-key-row-tampered"}

    # the console's log-in refuses it too, and audits it
    with httpx.Client(base_url=server.url) as browser:
        login = log_in(browser, forged)
    assert login.status_code == 401 and "facetrust_session" not in login.cookies
    assert len(refused_rows(server, key_id)) == len(events) + 1


def test_a_key_whose_role_was_changed_in_the_database_is_refused(served: Served) -> None:
    server, db = served.server, served.db
    key = server.keys["escalating"]
    assert status_of(server, key, "/v1/reviews") == 403  # an auditor may not review
    assert status_of(server, key) == 200  # verified: remembered by the server
    browser = httpx.Client(base_url=server.url)
    assert log_in(browser, key).status_code == 303
    db.execute("UPDATE api_keys SET role = 'operator' WHERE key_id = ?",
               (server.key_ids["escalating"],))
    assert status_of(server, key, "/v1/reviews") == 401
    assert status_of(server, key) == 401
    # its console session ends at the next page
    page = browser.get("/console/reviews")
    browser.close()
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    events = refused_rows(server, server.key_ids["escalating"])
    assert len(events) == 3 and {e["problem"] for e in events} == {"api-key-row-tampered"}
    assert {e["route"] for e in events} == {"/v1/reviews", "/v1/me", "/console/reviews"}


def test_a_revoked_key_stays_revoked_when_its_revocation_is_undone_in_the_database(
    served: Served,
) -> None:
    server, db = served.server, served.db
    key, key_id = server.keys["revoked"], server.key_ids["revoked"]
    assert status_of(server, key) == 200
    with server.client("admin") as admin:
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
    assert status_of(server, key) == 401  # at once
    db.execute("UPDATE api_keys SET revoked_at = NULL WHERE key_id = ?", (key_id,))
    assert status_of(server, key) == 401
    assert {e["problem"] for e in refused_rows(server, key_id)} == {"api-key-row-tampered"}


def test_pre_upgrade_key_rows_are_sealed_by_an_admin_and_survive_a_master_key_rotation(
    make_gallery: Callable[[Path], ServiceDb], tmp_path: Path
) -> None:
    db = make_gallery(tmp_path / "gallery")
    if db.url is None:
        with sqlite3.connect(db.folder / "api-keys.db") as raw:
            raw.execute(PRE_UPGRADE_SCHEMA)
    else:
        db.execute(PRE_UPGRADE_SCHEMA)
    old_id, old_key = db.forge("auditor")  # a key made by the version before
    facetrust = installed_runner(db.folder)

    # the service does not start while an unsealed key row exists, and says what to do
    port = str(free_port())
    try:
        refused = subprocess.run(
            [INSTALLED, "serve", "--port", port], capture_output=True, text=True,
            env=shell_env(db.folder), timeout=90,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("facetrust serve started with an unsealed API key row")
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "facetrust keys seal" in refused.stderr and old_id in refused.stderr

    # answering no seals nothing; --yes seals what it lists
    declined = facetrust("keys", "seal", input_text="n\n", code=1)
    assert old_id in declined.stdout
    sealed = facetrust("keys", "seal", "--yes")
    assert old_id in sealed.stdout and "auditor" in sealed.stdout
    assert "No API key rows" in facetrust("keys", "seal").stdout

    # keys made after the upgrade are sealed when made; a master-key rotation keeps all
    new = cli_key(db.folder, "admin", "after the upgrade")
    facetrust("keys", "rotate")
    after = cli_key(db.folder, "operator", "after the rotation")
    server = launch_server(db.folder, {"auditor": old_key, "admin": new["key"]},
                           {"auditor": old_id, "admin": new["key_id"]})
    try:
        assert status_of(server, old_key) == 200
        assert status_of(server, new["key"], "/v1/keys") == 200
        assert status_of(server, after["key"]) == 200
        [event] = audit_events(server, "apikey.seal")
        assert event["key_ids"] == [old_id] and event["actor"].startswith("cli:")
    finally:
        stop_server(server)
    assert re.search(r"\bsealed\b", sealed.stdout)


def test_a_console_session_row_inserted_by_a_database_writer_opens_nothing(
    served: Served,
) -> None:
    server, db = served.server, served.db
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC).timestamp()
    db.execute(
        "INSERT INTO console_sessions (token_sha256, key_id, csrf, created_at, last_seen, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (hashlib.sha256(token.encode()).hexdigest(), server.key_ids["admin"], "x" * 43,
         now, now, now + 3600),
    )
    with httpx.Client(base_url=server.url, cookies={"facetrust_session": token}) as browser:
        page = browser.get("/console/keys")
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    # a real log-in still works
    with httpx.Client(base_url=server.url) as browser:
        assert log_in(browser, server.keys["admin"]).status_code == 303
        assert browser.get("/console/keys").status_code == 200
