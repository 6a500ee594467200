"""The review desk: pending probes kept sealed until a decision, reference photos
for reviewers only, the review queue, and an audit event for every view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facetrust.errors import ReviewClosed, ReviewNotAllowed, StoreError
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gallery.pending import probe_key_name
from facetrust.gallery.review_desk import NO_PROBE_PHOTO, NO_REFERENCE_PHOTO
from installed_command import INSTALLED, shell_env

KOFI = "Kofi_Annan"
TWIN = "kofi-lookalike"


def files_of(path: Path) -> bytes:
    """The bytes of a SQLite file and its write-ahead log."""
    data = path.read_bytes()
    wal = Path(str(path) + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def kinds(gallery: Gallery) -> list[str]:
    return [e.kind for e in gallery.audit.events()]


@pytest.fixture
def kofi_gallery(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any,
) -> Gallery:
    """The sample identities enrolled from templates, Kofi Annan from photos kept."""
    gallery: Gallery = make_gallery()
    for name, paths in identities.items():
        gallery.add_subject(name, actor="registrar")
        grant(gallery, name)
        if name == KOFI:
            gallery.enroll(name, paths[:2], actor="registrar", keep_photos=True)
        else:
            gallery.enroll(name, [embeddings[p] for p in paths[:2]], actor="registrar")
    # a second candidate for Kofi Annan's probes, enrolled without photos
    gallery.add_subject(TWIN, actor="registrar")
    grant(gallery, TWIN)
    gallery.enroll(TWIN, [embeddings[identities[KOFI][1]]], actor="registrar",
                   check_duplicates=False)
    return gallery


def test_a_pending_probe_is_kept_sealed_shown_to_reviewers_and_shredded_on_decision(
    kofi_gallery: Gallery, identities: dict[str, list[Path]]
) -> None:
    gallery = kofi_gallery
    probe = identities[KOFI][2]
    photo = probe.read_bytes()
    found = gallery.identify(probe, purpose="boarding", actor="officer", k=2, case_ref="C-7")
    ident = found.identification_id
    assert found.candidates[0].subject_id == KOFI
    other = found.candidates[1].subject_id
    assert other == TWIN
    record = gallery.store.get_pending_probe(ident)
    assert record is not None and gallery.keystore.get_key(probe_key_name(ident)) is not None
    # never in clear in the database files: no slice of the photo is in them
    raw = files_of(gallery.config.db_path) + files_of(gallery.config.keystore_path)
    for start in range(0, len(photo) - 32, max(1, len(photo) // 16)):
        assert photo[start:start + 32] not in raw

    # the searcher may not review (policy), so sees neither probe nor references
    with pytest.raises(ReviewNotAllowed, match="ran this identification"):
        gallery.probe_photo(ident, reviewer="officer")
    with pytest.raises(ReviewNotAllowed):
        gallery.reference_photo(ident, KOFI, reviewer="officer")
    assert kinds(gallery)[-2:] == ["pending-probe.view.refused", "reference.view.refused"]

    shown = gallery.probe_photo(ident, reviewer="alice")
    assert shown.photo == photo and shown.box is not None and shown.message is None
    assert 0 < shown.box.left < shown.box.right < 250
    reference = gallery.reference_photo(ident, KOFI, reviewer="alice")
    assert reference.photo == identities[KOFI][0].read_bytes()
    without = gallery.reference_photo(ident, other, reviewer="alice")
    assert without.photo is None and without.message == NO_REFERENCE_PHOTO
    # least privilege: only the identification's candidates
    with pytest.raises(ReviewNotAllowed, match="not a candidate"):
        gallery.reference_photo(ident, "Colin_Powell", reviewer="alice")
    views = [e for e in gallery.audit.events() if e.kind == "reference.view"]
    assert [(e.actor, e.subject_ids, e.fields["photo_kept"]) for e in views] == [
        ("alice", (KOFI,), True), ("alice", (other,), False)
    ]

    gallery.review(ident, KOFI, reviewer="alice")
    case = gallery.review_case(ident, reviewer="bob")
    assert case.status == "pending" and case.may_review and case.probe_kept
    assert case.candidates[0].summary == "1 of 2 confirmations; waiting for a second reviewer."
    assert case.candidates[0].photo_kept and not case.candidates[1].photo_kept

    gallery.review(ident, KOFI, reviewer="bob")
    assert gallery.store.get_pending_probe(ident) is None
    assert gallery.keystore.get_key(probe_key_name(ident)) is None
    deleted = list(gallery.audit.events(kind="pending-probe.deleted"))
    assert [(e.actor, e.fields["reason"], e.fields["key_destroyed"]) for e in deleted] == [
        ("bob", "identification confirmed", True)
    ]
    assert record.ciphertext[12:60] not in files_of(gallery.config.db_path)
    case = gallery.review_case(ident, reviewer="carol")
    assert case.status == "confirmed" and not case.may_review and not case.probe_kept
    assert case.candidates[0].summary == "Confirmed by alice and bob."
    with pytest.raises(ReviewClosed, match="already decided"):
        gallery.probe_photo(ident, reviewer="carol")
    assert kinds(gallery)[-1] == "pending-probe.view.refused"
    for decision in ("confirm", "reject"):  # one confirmed candidate decides them all
        with pytest.raises(ReviewClosed, match=f"already confirmed as '{KOFI}'"):
            gallery.review(ident, other, reviewer="carol", decision=decision)
    assert gallery.audit.verify().ok


def test_the_retention_sweep_deletes_a_probe_past_its_time_limit(
    kofi_gallery: Gallery, identities: dict[str, list[Path]], clock: Any
) -> None:
    gallery = kofi_gallery
    ident = gallery.identify(
        identities[KOFI][3], purpose="boarding", actor="officer", case_ref="CASE-1"
    ).identification_id
    clock.advance(hours=23)
    assert gallery.sweep_retention().probes_deleted == 0
    assert gallery.probe_photo(ident, reviewer="alice").photo is not None
    clock.advance(hours=1, seconds=1)
    # past the limit it is not shown even before the sweep runs
    assert gallery.probe_photo(ident, reviewer="alice").message == NO_PROBE_PHOTO
    result = gallery.sweep_retention()
    assert result.probes_deleted == 1
    assert gallery.store.get_pending_probe(ident) is None
    assert gallery.keystore.get_key(probe_key_name(ident)) is None
    event = list(gallery.audit.events(kind="pending-probe.deleted"))[-1]
    assert event.fields["reason"] == "review time limit passed" and event.actor == "system"
    # still pending: reviewers may decide without the probe
    assert gallery.review_case(ident, reviewer="alice").status == "pending"

    # a decision whose deletion was interrupted (crash after the commit): the sweep ends it
    other = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer",
        case_ref="CASE-1")
    with gallery.store.transaction():
        gallery.store.mark_identification_decided(other.identification_id, "2026-01-16")
    assert gallery.sweep_retention().probes_deleted == 1
    assert gallery.keystore.get_key(probe_key_name(other.identification_id)) is None
    event = list(gallery.audit.events(kind="pending-probe.deleted"))[-1]
    assert event.fields["reason"] == "identification decided; deletion was interrupted"


@pytest.mark.parametrize("erase", ["forget", "withdraw"])
def test_erasing_a_candidate_deletes_the_probes_of_searches_that_returned_them(
    kofi_gallery: Gallery, identities: dict[str, list[Path]], erase: str
) -> None:
    gallery = kofi_gallery
    found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
                             case_ref="C-ERASE")
    ident = found.identification_id
    assert {c.subject_id for c in found.candidates} == {KOFI, TWIN}
    elsewhere = gallery.identify(identities["Colin_Powell"][2], purpose="boarding",
                                 actor="officer", k=1, case_ref="C-OTHER").identification_id
    assert gallery.store.get_pending_probe(elsewhere) is not None
    if erase == "forget":
        result = gallery.forget(TWIN, actor="registrar", reason="asked")
    else:
        result = gallery.withdraw_consent(TWIN, actor="registrar", reason="asked").erasure
    assert result is not None and result.probes_deleted == 1
    assert gallery.store.get_pending_probe(ident) is None
    assert gallery.keystore.get_key(probe_key_name(ident)) is None
    assert gallery.probe_photo(ident, reviewer="alice").message == NO_PROBE_PHOTO
    event = list(gallery.audit.events(kind="pending-probe.deleted"))[-1]
    assert event.fields["identification_id"] == ident
    assert event.fields["reason"] == f"candidate {TWIN} was erased"
    # a search in which the subject was no candidate keeps its probe for review
    assert gallery.store.get_pending_probe(elsewhere) is not None
    assert gallery.audit.verify().ok


def test_an_identification_whose_write_fails_keeps_no_probe_key(
    kofi_gallery: Gallery, identities: dict[str, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery = kofi_gallery
    keys = set(gallery.keystore.subject_ids())
    events = len(kinds(gallery))

    def disk_full(record: object) -> None:  # a store failure mid-write, after the key was made
        raise StoreError("The gallery database failed: disk I/O error.")

    monkeypatch.setattr(gallery.store, "insert_identification", disk_full)
    with pytest.raises(StoreError, match="disk I/O error"):
        gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
            case_ref="CASE-1")
    assert set(gallery.keystore.subject_ids()) == keys  # the probe's key went with it
    assert len(kinds(gallery)) == events
    monkeypatch.undo()
    found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
        case_ref="CASE-1")
    assert gallery.keystore.get_key(probe_key_name(found.identification_id)) is not None


def test_no_probe_is_kept_when_the_policy_says_so_or_for_a_template(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    enrol_all: Any,
) -> None:
    gallery = make_gallery(pending_probe_hours=0)
    enrol_all(gallery, identities, embeddings)
    ident = gallery.identify(identities[KOFI][3], purpose="boarding", actor="officer",
        case_ref="CASE-1")
    assert gallery.store.get_pending_probe(ident.identification_id) is None
    shown = gallery.probe_photo(ident.identification_id, reviewer="alice")
    assert shown.photo is None and shown.message == NO_PROBE_PHOTO


def test_the_review_queue_lists_what_each_reviewer_may_review_in_pages(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding], clock: Any,
) -> None:
    gallery = sample_gallery
    names = sorted(identities)[:4]
    made = []
    for n, name in enumerate(names):
        clock.advance(minutes=5)
        made.append(gallery.identify(
            embeddings[identities[name][2]], purpose="boarding", k=1, case_ref=f"C-{n}",
            actor="officer" if n < 3 else "alice",
        ))
    clock.advance(minutes=10)
    # the searcher's own identifications are not theirs to review
    mine = gallery.review_queue(reviewer="alice")
    assert [c.case_ref for c in mine.cases] == ["C-0", "C-1", "C-2"]
    assert mine.cases[0].age_s == 25 * 60 and mine.cases[0].purpose == "boarding"
    first = gallery.review_queue(reviewer="bob", limit=2)
    assert [c.case_ref for c in first.cases] == ["C-0", "C-1"] and first.next_after
    second = gallery.review_queue(reviewer="bob", limit=2, after=first.next_after)
    assert [c.case_ref for c in second.cases] == ["C-2", "C-3"]
    # reviewed by alice: gone from her queue, "1 of 2" in bob's; rejected: gone for all
    gallery.review(made[0].identification_id, names[0], reviewer="alice")
    gallery.review(made[1].identification_id, names[1], reviewer="alice", decision="reject")
    assert [c.case_ref for c in gallery.review_queue(reviewer="alice").cases] == ["C-2"]
    bobs = gallery.review_queue(reviewer="bob").cases
    assert [c.case_ref for c in bobs] == ["C-0", "C-2", "C-3"]
    assert bobs[0].candidates[0].confirmed_by == ("alice",)
    assert kinds(gallery).count("review.queue") == 5


def test_a_probe_key_left_by_an_identify_killed_mid_write_is_swept_once_old(
    tmp_path: Path, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    enrol_all: Any,
) -> None:
    """`facetrust identify` is killed (SIGKILL) after it made the probe's key and while
    its write waits for the gallery: the key, which seals nothing, is left by a sweep
    soon after (it could be an identify still writing) and deleted, audited, by the
    first sweep an hour later."""
    import json
    import signal
    import sqlite3
    import subprocess
    import time
    from datetime import UTC, datetime, timedelta

    from facetrust.gallery.pending import KEY_PREFIX, UNSTORED_KEY_HOURS

    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        enrol_all(gallery, identities, embeddings)
        config = gallery.config
    env, command = shell_env(tmp_path), INSTALLED
    made = subprocess.run(
        [command, "keys", "create", "--role", "operator", "--name", "gate", "--json"],
        capture_output=True, text=True, check=True, env=env,
    )
    env["FACETRUST_API_KEY"] = json.loads(made.stdout)["key"]

    def probe_keys() -> list[str]:
        with sqlite3.connect(config.keystore_path) as keys:
            rows = keys.execute("SELECT subject_id FROM data_keys").fetchall()
        return [str(r[0]) for r in rows if str(r[0]).startswith(KEY_PREFIX)]

    holder = sqlite3.connect(config.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the identify's write waits for this lock
    child = subprocess.Popen(
        [command, "identify", str(identities[KOFI][2]), "--purpose", "boarding",
         "--case-ref", "CRASH-1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 25  # well inside the write's 30 s busy timeout
        while not probe_keys() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        left = probe_keys()
        assert len(left) == 1
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    identification_id = left[0][len(KEY_PREFIX):]

    def sweep(hours_later: float) -> list[dict[str, Any]]:
        later = datetime.now(UTC) + timedelta(hours=hours_later)
        with Gallery.open(config, now=lambda: later) as opened:
            assert opened.store.get_identification(identification_id) is None
            opened.sweep_retention(actor="retention-job")
            return [e.fields for e in opened.audit.events(kind="pending-probe.deleted")]

    assert sweep(0.1) == [] and probe_keys() == left  # it may still be writing: left alone
    deleted = sweep(UNSTORED_KEY_HOURS + 0.1)
    assert probe_keys() == []
    assert [(e["identification_id"], e["key_destroyed"], e["row_deleted"]) for e in deleted] == [
        (identification_id, True, False)
    ]
    assert "interrupted" in deleted[0]["reason"]


def test_a_refused_review_decision_is_audited(
    kofi_gallery: Gallery, identities: dict[str, list[Path]]
) -> None:
    # the library audits it, so `facetrust review` leaves the trace the service leaves
    gallery = kofi_gallery
    found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
        case_ref="CASE-1")
    ident = found.identification_id
    with pytest.raises(ReviewNotAllowed):
        gallery.review(ident, KOFI, reviewer="officer")  # the searcher
    gallery.review(ident, KOFI, reviewer="alice", decision="reject")
    with pytest.raises(ReviewClosed):
        gallery.review(ident, KOFI, reviewer="bob")  # decided
    refused = [e for e in gallery.audit.events(kind="review.refused")]
    assert [(e.actor, e.fields["error"]) for e in refused] == [
        ("officer", "ReviewNotAllowed"), ("bob", "ReviewClosed"),
    ]
    assert {e.fields["identification_id"] for e in refused} == {ident}
    assert all(e.subject_ids == (KOFI,) for e in refused)


def test_a_candidate_whose_retention_ended_while_pending_is_not_confirmed_or_shown(
    make_gallery: Any, identities: dict[str, list[Path]], grant: Any, clock: Any
) -> None:
    """Retention ends while an identification awaits review: the candidate's reference
    photo is not decrypted, no confirmation is taken (it would count as an interaction
    and push the retention limit back), the identification (its only candidate gone)
    is closed, and the sweep then erases the subject."""
    gallery: Gallery = make_gallery(retention_days=30)
    gallery.add_subject(KOFI, actor="registrar")
    grant(gallery, KOFI, days=365)  # consent outlasts retention
    gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar", keep_photos=True)
    found = gallery.identify(identities[KOFI][3], purpose="boarding", actor="officer",
                             case_ref="C-RET")
    assert [c.subject_id for c in found.candidates] == [KOFI]
    ident = found.identification_id
    assert gallery.review(ident, KOFI, reviewer="alice").status == "pending"
    clock.advance(days=30, seconds=1)  # 30 days since the enrolment: retention ended

    with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
        gallery.reference_photo(ident, KOFI, reviewer="bob")
    with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
        gallery.review(ident, KOFI, reviewer="bob")
    case = gallery.review_case(ident, reviewer="bob")
    assert case.status == "closed" and case.candidates[0].status == "ineligible"
    assert case.candidates[0].summary == (
        "No longer eligible (retention period ended): it cannot be confirmed."
    )
    (closed,) = gallery.audit.events(kind="identification.closed")
    assert closed.fields["ineligible"] == {KOFI: "retention period ended"}
    refused = [e for e in gallery.audit.events() if e.kind in ("review.refused",
                                                               "reference.view.refused")]
    assert [e.kind for e in refused] == ["reference.view.refused", "review.refused"]
    assert gallery.sweep_retention(actor="cron").erased == (KOFI,)
    assert gallery.store.templates_of(KOFI) == [] and gallery.store.photos_of(KOFI) == []
    assert gallery.store.get_pending_probe(ident) is None
    assert gallery.audit.verify().ok
