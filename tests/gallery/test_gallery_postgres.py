"""The gallery end to end on a real PostgreSQL server: enrol, identify, erase, audit.

The gallery and its key store live in two databases of the session's server
(see ``postgres_url`` in tests/conftest.py), injected through the config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from test_gallery_concurrency import VICTIM, WORKER  # the same worker scripts as on SQLite
from test_gallery_review_closing import KOFI, TWIN, assert_closed, two_candidate_gallery

from facetrust import crypto
from facetrust.errors import (
    AuditChainBroken,
    DuplicateEnrolment,
    InvalidParameter,
    UnknownSubject,
)
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.store.postgres import PostgresStore
from installed_command import INSTALLED, shell_env


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
        result = gallery.identify(embeddings[paths[3]], purpose="boarding", actor="officer",
            case_ref="CASE-1")
        assert result.candidates and result.candidates[0].subject_id == name
        assert result.subjects_searched == len(identities)
    assert (gallery.store.vector_count() > 0) == server_side  # type: ignore[attr-defined]

    name, paths = next(iter(identities.items()))
    gallery.forget(name, actor="dpo")
    assert gallery.keystore.get_key(name) is None and gallery.store.templates_of(name) == []
    if server_side:
        assert gallery.store.vector_count() == 2 * (len(identities) - 1)  # type: ignore[attr-defined]
    result = gallery.identify(embeddings[paths[3]], purpose="boarding", actor="officer",
        case_ref="CASE-1")
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
    found = gallery.identify(probe, purpose="boarding", actor="o", case_ref="CASE-1")
    assert found.candidates[0].subject_id == names[0]
    hits = gallery.identify(probe, purpose="access-control", actor="o", case_ref="CASE-1")
    assert hits.candidates == () and hits.subjects_searched == 0  # no consent for that purpose
    clock.advance(days=11)  # the first consent expired: excluded at once, before any sweep
    result = gallery.identify(probe, purpose="boarding", actor="o", case_ref="CASE-1")
    assert names[0] not in [c.subject_id for c in result.candidates]
    assert result.subjects_searched == 2
    late = list(identities)[3]  # a change of the gallery refreshes the count at once
    gallery.add_subject(late, actor="registrar")
    grant(gallery, late, ("boarding",))
    gallery.enroll(late, [embeddings[identities[late][0]]], actor="registrar")
    assert gallery.identify(probe, purpose="boarding", actor="o",
        case_ref="CASE-1").subjects_searched == 3


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



def test_duplicates_are_found_in_the_database(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    gallery = make_pg_gallery(server_side_search=True, duplicate_policy="refuse")
    name, paths = next(iter(identities.items()))
    for subject in (name, "impostor"):
        gallery.add_subject(subject, actor="registrar")
        grant(gallery, subject)
    gallery.enroll(name, [embeddings[paths[0]]], actor="registrar")
    with pytest.raises(DuplicateEnrolment, match=name):
        gallery.enroll("impostor", [embeddings[paths[1]]], actor="registrar")


def _pg_folder(
    tmp_path: Path, embeddings: dict[Path, Embedding], postgres_url: Callable[[], str]
) -> tuple[Path, Path, str]:
    folder = tmp_path / "gallery"
    Gallery.init_folder(folder, database_url=postgres_url(), keystore_url=postgres_url())[0].close()
    vectors_file = tmp_path / "vectors.npy"
    np.save(vectors_file, np.stack([e.vector for e in embeddings.values()]))
    return folder, vectors_file, next(iter(embeddings.values())).model_id


def test_concurrent_processes_share_a_postgres_gallery(
    tmp_path: Path, embeddings: dict[Path, Embedding], postgres_url: Callable[[], str]
) -> None:
    folder, vectors_file, model_id = _pg_folder(tmp_path, embeddings, postgres_url)
    workers, per_worker = 3, 4
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(vectors_file), model_id, str(w),
             str(per_worker)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(workers)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    assert all(json.loads(out)["found"] == per_worker for out, _ in outputs)
    with Gallery.find(folder) as gallery:
        assert len(gallery.list_subjects()) == workers * per_worker
        assert len(gallery.store.all_templates()) == workers * per_worker
        report = gallery.audit.verify()
        assert report.ok and report.events_checked == 1 + workers * per_worker * 4


def test_a_process_killed_mid_enrolment_leaves_nothing_in_postgres(
    tmp_path: Path, embeddings: dict[Path, Embedding], postgres_url: Callable[[], str]
) -> None:
    folder, vectors_file, model_id = _pg_folder(tmp_path, embeddings, postgres_url)
    with Gallery.find(folder) as gallery:
        gallery.add_subject("victim", actor="registrar")
        gallery.grant_consent(
            "victim", ["boarding"], expires_at=gallery.now().replace(year=2099),
            evidence_ref="form", evidence_sha256="ab" * 32, notice_version="v1",
            actor="registrar",
        )
        events_before = gallery.audit.verify().events_checked
    flag = tmp_path / "paused"
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(folder), str(vectors_file), model_id, str(flag)],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        assert time.monotonic() < deadline, "the enrolment never reached its pause"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    with Gallery.find(folder) as gallery:  # the server rolled the open transaction back
        assert gallery.store.all_templates() == []
        assert gallery.audit.verify().events_checked == events_before
        vector = np.load(vectors_file)[0]
        assert len(gallery.enroll("victim", [Embedding(vector, model_id)],
                                  actor="registrar").template_ids) == 1


def test_rekeying_templates_renews_the_database_vectors(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
) -> None:
    gallery = make_pg_gallery(server_side_search=True)
    enrol_all(gallery, identities, embeddings)
    store = gallery.store
    assert isinstance(store, PostgresStore)
    before = store.query("SELECT embedding::text FROM template_vectors ORDER BY template_id")
    gallery.rekey_templates(actor="security")
    after = store.query("SELECT embedding::text FROM template_vectors ORDER BY template_id")
    assert len(after) == len(before) and all(a != b for a, b in zip(after, before, strict=True))
    for name, paths in identities.items():
        result = gallery.identify(embeddings[paths[2]], purpose="boarding", actor="officer",
            case_ref="CASE-1")
        assert result.candidates[0].subject_id == name


def test_init_with_a_database_url_from_the_command_line(
    tmp_path: Path, postgres_url: Callable[[], str]
) -> None:
    from click.testing import CliRunner

    from facetrust.cli.main import cli

    runner = CliRunner()
    folder = tmp_path / "g"
    url, keys_url = postgres_url(), postgres_url()
    created = runner.invoke(
        cli, ["init", str(folder), "--database-url", url, "--keystore-url", keys_url]
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["database"] == url
    assert not (folder / "gallery.db").exists() and not (folder / "gallery-keys.db").exists()
    added = runner.invoke(cli, ["subject", "add", "s1", "--gallery", str(folder), "--actor", "a"])
    assert added.exit_code == 0, added.output
    with Gallery.find(folder) as gallery:
        assert isinstance(gallery.store, PostgresStore)
        assert [s.subject_id for s in gallery.list_subjects()] == ["s1"]
    again = runner.invoke(cli, ["init", str(tmp_path / "h"), "--database-url", url])
    assert again.exit_code == 2 and "already holds a gallery" in again.output


@pytest.mark.parametrize(
    ("server_side", "direct_scan_max"),
    [(False, None), (True, None), (True, 0)],
    ids=["in-memory", "pgvector-few-members", "pgvector-database-search"],
)
def test_event_gallery_gate_and_closing_on_postgres(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    server_side: bool,
    direct_scan_max: int | None,
) -> None:
    from datetime import timedelta

    from facetrust.gallery import search
    from facetrust.gate import decisions, events

    if direct_scan_max is not None:  # an event too large to scan directly: the database searches
        monkeypatch.setattr(search, "DIRECT_SCAN_MAX_SUBJECTS", direct_scan_max)
    gallery = make_pg_gallery(server_side_search=server_side)
    enrol_all(gallery, identities, embeddings, photos=slice(0, 1))
    names, photos = list(identities), list(identities.values())
    now = gallery.now()
    events.open_event(
        gallery, "UA1", purpose="boarding", valid_from=now - timedelta(minutes=1),
        valid_to=now + timedelta(hours=2), actor="agent",
    )
    events.add_member(gallery, "UA1", names[0], actor="agent")
    events.add_member(gallery, "UA1", names[1], actor="agent")
    traveller = events.enroll_for_event(
        gallery, "UA1", embeddings[photos[2][0]], evidence_ref="doc", evidence_sha256="ef" * 32,
        notice_version="v1", actor="agent",
    )
    events.opt_out(gallery, "UA1", "seat 2A", actor="agent", subject_id=names[1])
    match = decisions.match_at_gate(
        gallery, "UA1", embeddings[photos[0][2]], gate_id="g", actor="gate",
        crop_jpeg=b"crop", keep_crop_hours=12,
    )
    assert (match.outcome, match.subject_id) == ("match", names[0])
    assert decisions.match_at_gate(
        gallery, "UA1", embeddings[photos[1][2]], gate_id="g", actor="gate"
    ).outcome == "refer"  # opted out
    assert decisions.match_at_gate(
        gallery, "UA1", embeddings[photos[2][2]], gate_id="g", actor="gate"
    ).subject_id == traveller
    assert len(gallery.store.probe_crops("UA1")) == 1
    # a server-side gallery's gate never decrypts the gallery into this process's memory
    if server_side:
        assert not gallery.parts.indexes.is_loaded(embeddings[photos[0][2]].model_id)
    closure = events.close_event(gallery, "UA1", actor="agent")
    assert closure.subjects_erased == (traveller,) and gallery.store.probe_crops() == []
    assert gallery.store.templates_of(traveller) == []
    assert gallery.audit.verify().ok


def _silent_server() -> tuple[Any, int]:
    """A TCP listener that accepts connections and never says a word (a hung server)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, int(listener.getsockname()[1])


@pytest.mark.parametrize(("query", "bound_s"), [("", 10.0), ("?connect_timeout=2", 2.0)])
def test_a_server_that_never_answers_is_a_clear_error_in_bounded_time(
    tmp_path: Path, query: str, bound_s: float
) -> None:
    """`facetrust init` against a PostgreSQL address that accepts and then hangs gives
    up after libpq's connect_timeout (10 s by default, the URL's own when it sets one)
    with a one-line error, where libpq alone would wait forever."""
    listener, port = _silent_server()
    url = f"postgresql://facetrust@127.0.0.1:{port}/gallery{query}"
    keystore_url = url.replace("/gallery", "/keystore")
    command, env = INSTALLED, shell_env()
    started = time.monotonic()
    try:
        done = subprocess.run(
            [command, "init", str(tmp_path / "g"), "--database-url", url,
             "--keystore-url", keystore_url],
            capture_output=True, text=True, check=False, env=env, timeout=60,
        )
    finally:
        listener.close()
    waited = time.monotonic() - started
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "Cannot connect to the" in done.stderr and "timeout" in done.stderr, done.stderr
    assert bound_s <= waited < bound_s + 8.0, waited


def test_a_case_nobody_can_decide_is_closed_on_postgres(
    make_pg_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
    clock: Any,
) -> None:
    """One candidate's consent to the purpose withdrawn, the other's expired: closed
    when the queue is read, with the same reasons and audit as on SQLite."""
    gallery, ident, boarding = two_candidate_gallery(
        make_pg_gallery(pending_probe_hours=720), identities, embeddings, grant,
        boarding_days=2)
    assert isinstance(gallery.store, PostgresStore)
    gallery.withdraw_consent(KOFI, boarding[KOFI], actor="registrar", reason="asked")
    assert gallery.review_case(ident, reviewer="alice").status == "pending"
    clock.advance(days=2, seconds=1)
    assert ident not in [c.identification_id
                         for c in gallery.review_queue(reviewer="alice").cases]
    assert_closed(gallery, ident, {KOFI: "consent to boarding withdrawn",
                                   TWIN: "consent to boarding expired"}, actor="alice")
