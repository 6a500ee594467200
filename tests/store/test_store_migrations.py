"""A store at schema version 1 (the first migration only) upgrades on open and keeps its data."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from facetrust.errors import StoreError
from facetrust.store import SqliteStore, SubjectRecord, TemplateRecord, postgres_migrations
from facetrust.store import migrations as sqlite_migrations
from facetrust.store.postgres import PostgresStore

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


def test_a_version_1_sqlite_gallery_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(sqlite_migrations.GALLERY_MIGRATIONS[0])
        db.execute("INSERT INTO subjects VALUES (?, ?, ?, ?, NULL)", ("s1", "Name", T0, T0))
        db.execute("INSERT INTO templates VALUES ('t1', 's1', 'm', ?, ?)", (b"cipher", T0))
        db.execute("UPDATE counters SET value = 5")
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
RELEASED = {
    "sqlite": ["50e5ab056105f0ff", "a2f5d90d084174ca", "2a7da43f6179f964", "d6a4b8b2442bb669"],
    "sqlite-keys": ["d9b9d6754c972257", "ec2273d3831cdb47"],
    "postgres": ["5f469f733d407b91", "a01f1ac96d9114f6", "54ec371fd534b39e", "3e0caf3c4072fbcf"],
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
