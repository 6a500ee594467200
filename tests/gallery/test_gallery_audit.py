"""Audit log tampering, edited directly in the SQLite file, is caught and located."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.errors import AuditChainBroken, InvalidParameter
from facetrust.gallery import Gallery
from installed_command import INSTALLED, shell_env


def tamper(db_path: Path, *statements: str) -> None:
    """Edit the gallery file as an attacker would: drop the guard triggers, then write."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    for statement in statements:
        db.execute(statement)
    db.close()


@pytest.fixture
def logged(sample_gallery: Gallery) -> Gallery:
    """The sample gallery: 31 events (creation, then 3 per subject)."""
    assert sample_gallery.audit.verify().ok
    return sample_gallery


EDITS: dict[str, tuple[Callable[[int], list[str]], Callable[[int], int]]] = {
    "edit": (
        lambda n: ["UPDATE audit_events SET actor = 'someone-else' WHERE seq = 7"],
        lambda n: 7,
    ),
    "edit-body": (
        lambda n: ["UPDATE audit_events SET body = replace(body, 'form-', 'fake-') WHERE seq = 3"],
        lambda n: 3,
    ),
    "delete": (lambda n: ["DELETE FROM audit_events WHERE seq = 12"], lambda n: 12),
    "insert": (
        lambda n: [
            "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 20",
            "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1020",
            "INSERT INTO audit_events SELECT 20, recorded_at, kind, actor, purpose, "
            "subject_ids, body, prev_mac, mac FROM audit_events WHERE seq = 19",
        ],
        lambda n: 20,
    ),
    "reorder": (
        lambda n: [
            "UPDATE audit_events SET seq = -1 WHERE seq = 15",
            "UPDATE audit_events SET seq = 15 WHERE seq = 16",
            "UPDATE audit_events SET seq = 16 WHERE seq = -1",
        ],
        lambda n: 15,
    ),
    "truncate": (lambda n: [f"DELETE FROM audit_events WHERE seq > {n - 3}"], lambda n: n - 2),
    "delete-everything": (
        lambda n: ["DELETE FROM audit_events", "DELETE FROM audit_head"], lambda n: 1
    ),
}


@pytest.mark.parametrize("attack", sorted(EDITS))
def test_tampering_is_detected_and_located(logged: Gallery, attack: str) -> None:
    count = logged.audit.verify().events_checked
    statements, where = EDITS[attack]
    db_path = logged.config.db_path
    tamper(db_path, *statements(count))
    report = logged.audit.verify()
    assert not report.ok
    assert report.first_broken_seq == where(count), report.reason
    assert str(where(count)) in report.reason
    with pytest.raises(AuditChainBroken, match=f"event {where(count)}"):
        logged.audit.check()


def test_truncation_with_a_forged_head_is_caught(logged: Gallery) -> None:
    count = logged.audit.verify().events_checked
    kept = list(logged.store.audit_records(count - 3))[0]
    tamper(
        logged.config.db_path,
        f"DELETE FROM audit_events WHERE seq > {count - 2}",
        f"UPDATE audit_head SET seq = {count - 2}, mac = '{kept.mac}'",
    )
    report = logged.audit.verify()
    assert not report.ok and "head checkpoint was altered" in report.reason


def test_rollback_to_an_older_copy_is_caught_by_the_anchored_head(
    logged: Gallery, tmp_path: Path
) -> None:
    old = tmp_path / "old.db"
    source = sqlite3.connect(logged.config.db_path)
    with sqlite3.connect(old) as target:
        source.backup(target)
    source.close()
    logged.add_subject("late", actor="registrar")
    anchor = logged.audit.head()
    # the whole file is swapped for the older, internally consistent copy
    logged.close()
    Path(str(logged.config.db_path) + "-wal").unlink(missing_ok=True)
    logged.config.db_path.write_bytes(old.read_bytes())
    with Gallery.open(logged.config, master_key=logged.parts.keyring.master_key) as restored:
        assert restored.audit.verify().ok  # consistent on its own ...
        report = restored.audit.verify(expect_head=(anchor.seq, anchor.mac))
        assert not report.ok and report.first_broken_seq == anchor.seq  # ... but not anchored


def test_cli_audit_verify_names_the_broken_event(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "g"
    assert runner.invoke(cli, ["init", str(folder)]).exit_code == 0
    for subject in ("a", "b", "c"):
        done = runner.invoke(cli, ["subject", "add", subject, "--gallery", str(folder)])
        assert done.exit_code == 0, done.output
    intact = runner.invoke(cli, ["audit", "verify", "--gallery", str(folder)])
    assert intact.exit_code == 0 and "intact: 4 events" in intact.output
    tamper(folder / "gallery.db", "UPDATE audit_events SET actor = 'x' WHERE seq = 3")
    broken = runner.invoke(cli, ["audit", "verify", "--gallery", str(folder)])
    assert broken.exit_code == 1
    assert "BROKEN at event 3" in broken.output


def test_audit_export_filters_by_subject_actor_purpose_and_time(
    logged: Gallery, clock: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Any]
) -> None:
    start = clock.current
    clock.advance(days=1)
    probe = embeddings[identities["Kofi_Annan"][3]]
    logged.identify(probe, purpose="boarding", actor="officer-7", case_ref="C-1")
    by_actor = list(logged.audit.events(actor="officer-7"))
    assert [e.kind for e in by_actor] == ["identify"]
    assert [e.kind for e in logged.audit.events(subject="Kofi_Annan")] == [
        "subject.add",
        "consent.grant",
        "enrol",
        "identify",
    ]
    assert len(list(logged.audit.events(purpose="boarding"))) == 1
    assert len(list(logged.audit.events(until=start + timedelta(hours=1)))) == 31
    assert len(list(logged.audit.events(since=start + timedelta(hours=1)))) == 1
    import io

    stream = io.StringIO()
    assert logged.audit.export(stream, kind="enrol") == 10
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["kind"] for line in lines} == {"enrol"} and all("mac" in x for x in lines)


def test_audit_events_page_by_sequence_both_ways(tmp_path: Path) -> None:
    gallery, _ = Gallery.init_folder(tmp_path / "g")
    try:
        for n in range(10):
            gallery.audit.append("test.page", actor="tester", subject_ids=[f"s{n % 2}"], n=n)
        pages = [e.seq for e in gallery.audit.events(kind="test.page")]
        assert len(pages) == 10
        newest = [e.seq for e in gallery.audit.events(kind="test.page", limit=3,
                                                      newest_first=True)]
        assert newest == pages[::-1][:3]
        older = [e.seq for e in gallery.audit.events(kind="test.page", before_seq=newest[-1],
                                                     limit=3, newest_first=True)]
        assert older == pages[::-1][3:6]
        newer = [e.seq for e in gallery.audit.events(kind="test.page", after_seq=older[0],
                                                     limit=3)]
        assert newer == sorted(newest)
        only_s1 = [e.fields["n"] for e in gallery.audit.events(subject="s1", after_seq=pages[2],
                                                               before_seq=pages[8])]
        assert only_s1 == [3, 5, 7]
        assert list(gallery.audit.events(limit=0)) == []
        with pytest.raises(InvalidParameter, match="'limit' parameter of events"):
            list(gallery.audit.events(limit=-1))
    finally:
        gallery.close()


CONSENT_EDITS = {
    "widen the purposes": (
        "UPDATE consents SET purposes = '[\"boarding\", \"access-control\"]' "
        "WHERE subject_id = '{s}'", "is not as event"),
    "push the expiry back": (
        "UPDATE consents SET expires_at = '2099-01-01T00:00:00+00:00' WHERE subject_id = '{s}'",
        "is not as event"),
    "insert a consent": (
        "INSERT INTO consents (consent_id, subject_id, purposes, granted_at, expires_at, "
        "evidence_ref, evidence_sha256, notice_version) SELECT 'forged', subject_id, purposes, "
        "granted_at, expires_at, evidence_ref, evidence_sha256, notice_version FROM consents "
        "WHERE subject_id = '{s}'", "no consent.grant event granted it"),
}


@pytest.mark.parametrize("attack", sorted(CONSENT_EDITS))
def test_a_consent_edited_in_the_database_breaks_the_audit(logged: Gallery, attack: str) -> None:
    subject = logged.list_subjects()[0].subject_id
    statement, reason = CONSENT_EDITS[attack]
    tamper(logged.config.db_path, statement.format(s=subject))
    report = logged.audit.verify()
    assert not report.ok and reason in report.reason, report.reason
    assert subject in report.reason
    with pytest.raises(AuditChainBroken, match=reason):
        logged.audit.check()


def test_a_withdrawn_consent_made_active_again_breaks_the_audit(logged: Gallery) -> None:
    subject = logged.list_subjects()[0].subject_id
    logged.withdraw_consent(subject, actor="registrar", reason="asked")
    assert logged.audit.verify().ok
    tamper(logged.config.db_path,
           f"UPDATE consents SET withdrawn_at = NULL WHERE subject_id = '{subject}'")
    report = logged.audit.verify()
    withdrawal = list(logged.audit.events(kind="consent.withdraw"))[-1].seq
    assert not report.ok and report.first_broken_seq == withdrawal
    assert f"was withdrawn by event {withdrawal}" in report.reason


def test_the_installed_cli_reports_a_widened_consent(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    env = shell_env()

    def facetrust(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INSTALLED, *args, "--gallery", str(folder)], env=env,
                              capture_output=True, text=True, check=False, timeout=120)

    assert subprocess.run([INSTALLED, "init", str(folder)], env=env, capture_output=True,
                          check=False, timeout=120).returncode == 0
    assert facetrust("subject", "add", "kofi").returncode == 0
    granted = facetrust("consent", "grant", "kofi", "--purpose", "access-control",
                        "--days", "30", "--evidence-ref", "form-1", "--evidence-sha256",
                        "ab" * 32, "--notice-version", "2026-01")
    assert granted.returncode == 0, granted.stderr
    assert facetrust("audit", "verify").returncode == 0
    tamper(folder / "gallery.db",
           "UPDATE consents SET purposes = '[\"access-control\", \"boarding\"]'")
    broken = facetrust("audit", "verify")
    assert broken.returncode == 1
    assert "consent" in broken.stderr and "kofi" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_a_review_decision_written_into_the_database_breaks_the_audit(
    logged: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Any]
) -> None:
    probe = embeddings[identities[sorted(identities)[0]][2]]
    found = logged.identify(probe, purpose="boarding", actor="officer", case_ref="C-REV")
    ident, candidate = found.identification_id, found.candidates[0].subject_id
    logged.review(ident, candidate, reviewer="alice")
    assert logged.audit.verify().ok
    tamper(logged.config.db_path,
           "INSERT INTO reviews (identification_id, subject_id, reviewer, decision, decided_at) "
           f"VALUES ('{ident}', '{candidate}', 'mallory', 'confirm', '2026-01-15T10:00:00+00:00')")
    report = logged.audit.verify()
    assert not report.ok and report.first_broken_seq is None
    assert "the confirm by mallory" in report.reason and "no review event" in report.reason
    tamper(logged.config.db_path,
           "DELETE FROM reviews WHERE reviewer = 'mallory'",
           "UPDATE reviews SET decision = 'reject' WHERE reviewer = 'alice'")
    report = logged.audit.verify()
    review = list(logged.audit.events(kind="review"))[-1].seq
    assert not report.ok and report.first_broken_seq == review
    assert f"event {review} recorded a confirm" in report.reason
