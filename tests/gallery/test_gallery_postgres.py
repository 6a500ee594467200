"""The gallery end to end on a real PostgreSQL server: enrol, identify, erase, audit.

The gallery and its key store live in two databases of the session's server
(see ``postgres_url`` in tests/conftest.py), injected through the config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from facetrust import crypto
from facetrust.errors import AuditChainBroken, InvalidParameter, UnknownSubject
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.store.postgres import PostgresStore


@pytest.fixture
def make_pg_gallery(
    tmp_path: Path,
    clock: Any,
    master_key: crypto.MasterKey,
    postgres_url: Callable[[], str],
) -> Any:
    opened: list[Gallery] = []

    def make(**settings: Any) -> Gallery:
        config = GalleryConfig.in_folder(
            tmp_path, key_file=None, database_url=postgres_url(),
            keystore_url=postgres_url(), **settings,
        )
        gallery = Gallery.create(config, master_key, now=clock)
        opened.append(gallery)
        return gallery

    yield make
    for gallery in opened:
        gallery.close()


@pytest.mark.parametrize("server_side", [False, True], ids=["in-memory", "pgvector"])
def test_enrol_identify_and_forget_on_postgres(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    server_side: bool,
    enrol_all: Callable[..., None],
) -> None:
    gallery = make_pg_gallery(server_side_search=server_side)
    assert isinstance(gallery.store, PostgresStore)
    enrol_all(gallery, identities, embeddings)
    for name, paths in identities.items():
        result = gallery.identify(embeddings[paths[3]], purpose="boarding", actor="officer")
        assert result.candidates and result.candidates[0].subject_id == name
        assert result.subjects_searched == len(identities)
    assert (gallery.store.vector_count() > 0) == server_side  # type: ignore[attr-defined]

    name, paths = next(iter(identities.items()))
    gallery.forget(name, actor="dpo")
    assert gallery.keystore.get_key(name) is None and gallery.store.templates_of(name) == []
    if server_side:
        assert gallery.store.vector_count() == 2 * (len(identities) - 1)  # type: ignore[attr-defined]
    result = gallery.identify(embeddings[paths[3]], purpose="boarding", actor="officer")
    assert name not in [c.subject_id for c in result.candidates]
    with pytest.raises(UnknownSubject):
        gallery.get_subject(name)


def test_pgvector_search_follows_consent(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    clock: Any,
    grant: Callable[..., str],
) -> None:
    gallery = make_pg_gallery(server_side_search=True)
    names = list(identities)[:3]
    for name in names:
        gallery.add_subject(name, actor="registrar")
        grant(gallery, name, ("boarding",), days=10 if name == names[0] else 30)
        gallery.enroll(name, [embeddings[identities[name][0]]], actor="registrar")
    probe = embeddings[identities[names[0]][1]]
    found = gallery.identify(probe, purpose="boarding", actor="o")
    assert found.candidates[0].subject_id == names[0]
    hits = gallery.identify(probe, purpose="access-control", actor="o")
    assert hits.candidates == () and hits.subjects_searched == 0  # no consent for that purpose
    clock.advance(days=11)  # the first consent expired: excluded at once, before any sweep
    result = gallery.identify(probe, purpose="boarding", actor="o")
    assert names[0] not in [c.subject_id for c in result.candidates]
    assert result.subjects_searched == 2


def test_audit_tampering_in_postgres_is_detected(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
) -> None:
    gallery = make_pg_gallery()
    enrol_all(gallery, identities, embeddings)
    assert gallery.audit.verify().ok
    url = gallery.config.database_url or ""
    with psycopg.connect(url, autocommit=True) as db, pytest.raises(psycopg.IntegrityError):
        db.execute("UPDATE audit_events SET actor = 'x' WHERE seq = 7")  # the trigger refuses
    with psycopg.connect(url, autocommit=True) as db:  # an owner can disable triggers
        db.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        db.execute("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 7")
    report = gallery.audit.verify()
    assert not report.ok and report.first_broken_seq == 7
    with pytest.raises(AuditChainBroken, match="event 7"):
        gallery.audit.check()


def test_server_side_search_needs_postgres(
    make_gallery: Callable[..., Gallery],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    gallery = make_gallery(server_side_search=True)
    gallery.add_subject("s1", actor="registrar")
    grant(gallery, "s1")
    with pytest.raises(InvalidParameter, match="needs a PostgreSQL gallery"):
        gallery.enroll("s1", [next(iter(embeddings.values()))], actor="registrar")


def test_keystore_and_gallery_must_not_share_a_database(tmp_path: Path) -> None:
    url = "postgresql://localhost/facetrust"
    with pytest.raises(InvalidParameter, match="another database"):
        GalleryConfig.in_folder(tmp_path, database_url=url, keystore_url=url)


def test_database_url_from_the_environment(
    tmp_path: Path, master_key: crypto.MasterKey, postgres_url: Callable[[], str]
) -> None:
    url = postgres_url()
    environ = {"FACETRUST_DATABASE_URL": url}
    config = GalleryConfig.in_folder(tmp_path, key_file=None)
    with Gallery.create(config, master_key, environ=environ) as gallery:
        assert isinstance(gallery.store, PostgresStore)
    assert not config.db_path.exists()
    with Gallery.open(config, master_key=master_key, environ=environ) as gallery:
        assert gallery.gallery_id

