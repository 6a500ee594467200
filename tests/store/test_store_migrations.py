"""A store at schema version 1 (the first migration only) upgrades on open and keeps its data."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from facetrust.errors import StoreError
from facetrust.gallery import Gallery
from facetrust.store import (
    IdentificationRecord,
    SqliteStore,
    SubjectRecord,
    TemplateRecord,
    postgres_migrations,
)
from facetrust.store import migrations as sqlite_migrations
from facetrust.store.postgres import PostgresStore
from installed_command import INSTALLED, shell_env

T0 = "2026-01-01T00:00:00+00:00"
SUBJECT = SubjectRecord("s1", "Name", T0, T0)


def _check_upgraded(store: SqliteStore | PostgresStore) -> None:
    assert store.get_subject("s1") == SUBJECT
    assert store.templates_of("s1") == [TemplateRecord("t1", "s1", "m", b"cipher", T0)]
    # change tracking starts at the upgrade: a reader from before reloads in full
    assert store.generation() == 5 and store.changes_since(4) is None
    assert store.template_model_ids() == ["m"]
    with store.transaction():  # the new column takes values
        store.insert_template(TemplateRecord("t2", "s1", "m", b"c", T0, "d" * 64))
    assert store.templates_of("s1")[1].source_digest == "d" * 64
    changes = store.changes_since(5)
    assert changes is not None and [t.template_id for t in changes.templates] == ["t2"]
    with store.transaction():
        store.delete_biometrics("s1")
    changes = store.changes_since(5)
    assert changes is not None and sorted(changes.removed_templates) == ["t1", "t2"]
    with store.transaction():  # the identifications' closure column takes values
        store.insert_identification(IdentificationRecord(
            "i1", "boarding", "officer", None, "ff" * 32, "m", "op", 0.6, T0, T0,
            (("s1", 0.3, 1),), review_quorum=2))
        assert store.close_identification("i1", T0, {"s1": "the subject was erased"})
    assert store.identification_closure("i1") == {"s1": "the subject was erased"}
    # the quorum of a search made before the upgrade comes from its identify event
    old = store.get_identification("i0")
    assert old is not None and old.review_quorum == 3
    unlogged = store.get_identification("i-unlogged")
    assert unlogged is not None and unlogged.review_quorum is None
    assert store.get_identification("i1").review_quorum == 2  # type: ignore[union-attr]


#: Two identifications of version 1: one with its identify event (under a quorum of
#: 3), one whose event is not in the log; and an event of another kind.
OLD_IDENTIFICATIONS = [
    ("i0", "boarding", "officer", None, "aa" * 32, "m", "op", 0.6, T0, T0, '[["s1", 0.3, 1]]'),
    ("i-unlogged", "boarding", "officer", None, "bb" * 32, "m", "op", 0.6, T0, T0, "[]"),
]
OLD_EVENTS = [
    (1, T0, "policy.changed", "service", None, "[]", '{"review_quorum":1}', "0", "m1"),
    (2, T0, "identify", "officer", "boarding", '["s1"]',
     '{"identification_id":"i0","review_quorum":3}', "m1", "m2"),
]


def test_a_version_1_sqlite_gallery_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(sqlite_migrations.GALLERY_MIGRATIONS[0])
        db.execute("INSERT INTO subjects VALUES (?, ?, ?, ?, NULL)", ("s1", "Name", T0, T0))
        db.execute("INSERT INTO templates VALUES ('t1', 's1', 'm', ?, ?)", (b"cipher", T0))
        db.execute("UPDATE counters SET value = 5")
        db.executemany("INSERT INTO identifications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       OLD_IDENTIFICATIONS)
        db.executemany("INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       OLD_EVENTS)
        db.execute("PRAGMA user_version = 1")
        db.execute("PRAGMA application_id = 1179928369")  # "FTG1"
    db.close()
    store = SqliteStore(path)
    try:
        version = store.query("PRAGMA user_version")[0][0]
        assert version == len(sqlite_migrations.GALLERY_MIGRATIONS) > 1
        _check_upgraded(store)
    finally:
        store.close()


def test_a_version_1_postgres_gallery_is_upgraded_and_keeps_its_data(
    postgres_url: Callable[[], str],
) -> None:
    url = postgres_url()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(postgres_migrations.GALLERY_MIGRATIONS[0].encode())
        db.execute("CREATE TABLE facetrust_schema (kind TEXT PRIMARY KEY, version INT NOT NULL)")
        db.execute("INSERT INTO facetrust_schema VALUES ('gallery', 1)")
        db.execute("UPDATE counters SET value = 5")
        db.execute(
            "INSERT INTO subjects (subject_id, display_name, created_at, last_interaction_at) "
            "VALUES ('s1', 'Name', %s, %s)", (T0, T0),
        )
        db.execute("INSERT INTO templates (template_id, subject_id, model_id, ciphertext, "
                   "created_at) VALUES ('t1', 's1', 'm', %s, %s)", (b"cipher", T0))
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO identifications VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                OLD_IDENTIFICATIONS)
            cursor.executemany(
                "INSERT INTO audit_events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                OLD_EVENTS)
    store = PostgresStore(url)
    try:
        row = store.query("SELECT version FROM facetrust_schema WHERE kind = 'gallery'")
        assert row[0][0] == len(postgres_migrations.GALLERY_MIGRATIONS) > 1
        _check_upgraded(store)
    finally:
        store.close()


def test_a_postgres_database_without_a_gallery_is_refused(
    postgres_url: Callable[[], str],
) -> None:
    url = postgres_url()
    with pytest.raises(StoreError, match="holds no facetrust gallery"):
        PostgresStore(url)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE unrelated (x int)")
    with pytest.raises(StoreError, match="not a facetrust"):
        PostgresStore(url, create=True)


def test_messages_never_show_a_database_password() -> None:
    from facetrust.store.postgres import redact_url

    assert redact_url("postgresql://app:s3cret@db:5432/g") == "postgresql://app:***@db:5432/g"
    assert redact_url("postgresql://app@db/g") == "postgresql://app@db/g"


#: SHA-256 (first 16 hex digits) of each released migration, whitespace collapsed:
#: the shared table definitions (facetrust.store.schema) must keep rendering them.
#: Add a migration's digest here when it is released; never change one.
RELEASED = {
    "sqlite": ["50e5ab056105f0ff", "a2f5d90d084174ca", "2a7da43f6179f964", "d6a4b8b2442bb669",
               "1eb3cb2f86f6ea3b", "d48a535e0e4aeb67", "51e2f6845d3b5e6a", "d47c07ca11b0fc31",
               "b420dac5ae1779cf"],
    "sqlite-keys": ["d9b9d6754c972257", "ec2273d3831cdb47"],
    "postgres": ["5f469f733d407b91", "a01f1ac96d9114f6", "54ec371fd534b39e", "3e0caf3c4072fbcf",
                 "f108ede3e4d31c36", "0cff57f96e444006", "2436e0b846356179", "d47c07ca11b0fc31",
                 "1ba6335aca6bf2d8"],
    "postgres-keys": ["98c26f912d46b859", "ec2273d3831cdb47"],
}


def test_released_migrations_are_never_edited() -> None:
    import hashlib

    def digests(scripts: list[str]) -> list[str]:
        return [hashlib.sha256(" ".join(s.split()).encode()).hexdigest()[:16] for s in scripts]

    found = {
        "sqlite": digests(sqlite_migrations.GALLERY_MIGRATIONS),
        "sqlite-keys": digests(sqlite_migrations.KEYSTORE_MIGRATIONS),
        "postgres": digests(postgres_migrations.GALLERY_MIGRATIONS),
        "postgres-keys": digests(postgres_migrations.KEYSTORE_MIGRATIONS),
    }
    for kind, released in RELEASED.items():
        assert found[kind][: len(released)] == released, kind


def test_a_postgres_gallery_of_a_newer_facetrust_is_refused_untouched(
    postgres_url: Callable[[], str],
) -> None:
    url = postgres_url()
    PostgresStore(url, create=True).close()
    newer = len(postgres_migrations.GALLERY_MIGRATIONS) + 1
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE facetrust_schema SET version = %s WHERE kind = 'gallery'", (newer,))
    with pytest.raises(StoreError, match=r"newer than this facetrust understands .*Upgrade"):
        PostgresStore(url)
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT version FROM facetrust_schema WHERE kind = 'gallery'").fetchone()
    assert row is not None and row[0] == newer


@pytest.mark.slow  # runs the installed command in subprocesses
def test_a_replica_left_on_an_older_facetrust_refuses_the_upgraded_gallery(
    tmp_path: Path,
) -> None:
    # A rolling upgrade: the first upgraded process migrated the gallery; a process
    # still on the old version that starts (a replica restarting, a CLI command)
    # must refuse it with one clear line, and leave it as it is.
    gallery, _ = Gallery.init_folder(tmp_path)
    gallery.add_subject("kofi", actor="registrar")
    gallery.close()
    newer = len(sqlite_migrations.GALLERY_MIGRATIONS) + 1
    with sqlite3.connect(tmp_path / "gallery.db", isolation_level=None) as db:
        db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    env, command = shell_env(tmp_path), INSTALLED
    for args in (["subject", "list"], ["serve", "--host", "127.0.0.1", "--port", "0"]):
        done = subprocess.run([command, *args], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "newer than this facetrust understands" in done.stderr, args
        assert "Upgrade facetrust" in done.stderr and "Traceback" not in done.stderr, args
    with sqlite3.connect(tmp_path / "gallery.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newer
        assert db.execute("SELECT subject_id FROM subjects").fetchall() == [("kofi",)]
    db.close()
