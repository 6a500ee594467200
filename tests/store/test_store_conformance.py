"""The conformance suite every Store and KeyStore implementation must pass.

Parametrised over store factories: SQLite files, and a real PostgreSQL server
(with pgvector) started from a wheel for the session, a fresh database per test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facetrust.errors import StoreError, StoreUnavailable
from facetrust.service.service_db import open_service_database
from facetrust.store import (
    AuditHead,
    AuditRecord,
    ConsentRecord,
    EligibilityColumns,
    IdentificationRecord,
    KeyStore,
    PendingProbeRecord,
    PhotoRecord,
    QueuedPhoto,
    ReviewRecord,
    SqliteKeyStore,
    SqliteStore,
    Store,
    StoreChanges,
    SubjectRecord,
    TemplateRecord,
)
from facetrust.store.postgres import PostgresKeyStore, PostgresStore

T0 = "2026-01-01T00:00:00+00:00"

# Each factory gets the test's folder and a maker of fresh PostgreSQL databases.
NewDatabase = Callable[[], str]
STORES: dict[str, Callable[[Path, NewDatabase], Store]] = {
    "sqlite": lambda folder, _: SqliteStore(folder / "gallery.db", create=True),
    "postgres": lambda _, new_database: PostgresStore(new_database(), create=True),
}
KEYSTORES: dict[str, Callable[[Path, NewDatabase], KeyStore]] = {
    "sqlite": lambda folder, _: SqliteKeyStore(folder / "keys.db", create=True),
    "postgres": lambda _, new_database: PostgresKeyStore(new_database(), create=True),
}


def _new_database(request: pytest.FixtureRequest) -> NewDatabase:
    # only PostgreSQL parameters start the server
    return lambda: request.getfixturevalue("postgres_url")()


@pytest.fixture(params=sorted(KEYSTORES))
def keystore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    instance = KEYSTORES[request.param](tmp_path, _new_database(request))
    yield instance
    instance.close()


def subject(subject_id: str = "s1") -> SubjectRecord:
    return SubjectRecord(subject_id, "Name", T0, T0)


def test_subjects_round_trip_and_erasure_keeps_the_id(store: Store) -> None:
    with store.transaction():
        store.insert_subject(subject())
    assert store.get_subject("s1") == subject()
    with store.transaction():
        store.touch_subject("s1", "2026-02-01T00:00:00+00:00")
        store.mark_subject_erased("s1", "2026-03-01T00:00:00+00:00")
    erased = store.get_subject("s1")
    assert erased is not None and erased.display_name is None and erased.erased_at
    assert store.list_subjects() == [] and len(store.list_subjects(include_erased=True)) == 1
    with pytest.raises(StoreError), store.transaction():
        store.insert_subject(subject())


def test_subjects_page_by_id_and_search_id_or_name(store: Store) -> None:
    names = {"a-1": "Ana Lopez", "b-2": "Ben 50%", "c-3": None, "d-4": "ana maria", "e_5": None}
    with store.transaction():
        for subject_id, name in names.items():
            store.insert_subject(SubjectRecord(subject_id, name, T0, T0))
        store.mark_subject_erased("d-4", T0)
    first = store.page_subjects(limit=2)
    assert [s.subject_id for s in first] == ["a-1", "b-2"]
    rest = store.page_subjects(after=first[-1].subject_id, limit=2)
    assert [s.subject_id for s in rest] == ["c-3", "e_5"]  # the erased one is left out
    assert store.page_subjects(after="e_5") == []
    assert [s.subject_id for s in store.page_subjects(contains="ANA")] == ["a-1"]
    assert [s.subject_id for s in store.page_subjects(contains="c-3")] == ["c-3"]
    # LIKE's wildcards typed in a search match themselves only
    assert [s.subject_id for s in store.page_subjects(contains="50%")] == ["b-2"]
    assert [s.subject_id for s in store.page_subjects(contains="_")] == ["e_5"]
    assert [s.subject_id for s in store.page_subjects(contains="a", after="a-1")] == []
    # case is ignored beyond A-Z too (SQLite's own LOWER folds A-Z only)
    with store.transaction():
        store.insert_subject(SubjectRecord("f-6", "\u00c9lodie Dupr\u00e9", T0, T0))
    for typed in ("\u00e9lodie", "\u00c9lodie", "DUPR\u00c9"):
        assert [s.subject_id for s in store.page_subjects(contains=typed)] == ["f-6"], typed


def test_writes_outside_a_transaction_are_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        store.insert_subject(subject())


def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_subject(subject())
        store.bump_generation()
        raise RuntimeError("crash")
    assert store.get_subject("s1") is None and store.generation() == 0


def test_consents_templates_photos(store: Store) -> None:
    consent = ConsentRecord(
        "c1",
        "s1",
        ("boarding", "access-control"),
        T0,
        "2027-01-01T00:00:00+00:00",
        "form-1",
        "ab" * 32,
        "v1",
    )
    template = TemplateRecord("t1", "s1", "m", b"\x00\x01cipher", T0)
    with store.transaction():
        store.insert_subject(subject())
        store.insert_consent(consent)
        store.insert_template(template)
        store.insert_photo(PhotoRecord("p1", "s1", b"photo", T0))
        store.bump_generation()
    assert store.consents_of("s1") == [consent] and store.all_consents() == [consent]
    assert store.templates_of("s1") == [template] and store.all_templates() == [template]
    assert store.generation() == 1
    with store.transaction():
        store.withdraw_consent("c1", T0, "asked")
        store.replace_template_ciphertext("t1", b"new")
    assert store.consents_of("s1")[0].withdrawn_at == T0
    assert store.templates_of("s1")[0].ciphertext == b"new"
    with store.transaction():
        assert store.delete_biometrics("s1") == 2
    assert store.templates_of("s1") == [] and store.photos_of("s1") == []
    store.reclaim()


def test_templates_need_an_existing_subject(store: Store) -> None:
    with pytest.raises(StoreError), store.transaction():
        store.insert_template(TemplateRecord("t1", "ghost", "m", b"x", T0))
    assert store.all_templates() == []


def test_identifications_and_reviews(store: Store) -> None:
    record = IdentificationRecord(
        "i1",
        "boarding",
        "officer",
        None,
        "ff" * 32,
        "m",
        "op",
        0.6,
        T0,
        T0,
        (("s1", 0.3, 1), ("s2", 0.5, 2)),
        review_quorum=2,
    )
    with store.transaction():
        store.insert_identification(record)
        store.insert_review(ReviewRecord("i1", "s1", "alice", "confirm", T0))
        store.insert_review(ReviewRecord("i1", "s1", "bob", "confirm", T0, "ok"))
    assert store.get_identification("i1") == record
    assert [r.reviewer for r in store.reviews_of("i1")] == ["alice", "bob"]
    with store.transaction():
        store.insert_review(ReviewRecord("i1", "s2", "alice", "reject", T0))
    pages, after = [], None
    while page := store.page_reviews(after, limit=2):
        pages.append([(r.subject_id, r.reviewer) for r in page])
        after = (page[-1].identification_id, page[-1].subject_id, page[-1].reviewer)
    assert pages == [[("s1", "alice"), ("s1", "bob")], [("s2", "alice")]]


def test_undecided_identifications_in_keyset_pages_and_pending_probes(store: Store) -> None:
    def identification(n: int, started: str) -> IdentificationRecord:
        return IdentificationRecord(
            f"i{n}", "boarding", "officer", None, "ff" * 32, "m", "op", 0.6, started, started,
            (("s1", 0.3, 1),),
        )

    with store.transaction():
        for n, started in enumerate([T0, T0, "2026-01-02T00:00:00+00:00", T0]):
            store.insert_identification(identification(n, started))
        store.mark_identification_decided("i1", T0)
        store.insert_pending_probe(PendingProbeRecord("i2", b"sealed", T0, "2026-01-03T00:00"))
    first = store.undecided_identifications(None, 2)
    assert [r.identification_id for r in first] == ["i0", "i3"]
    rest = store.undecided_identifications((first[-1].started_at, "i3"), 2)
    assert [r.identification_id for r in rest] == ["i2"]
    assert store.identification_decided_at("i1") == T0
    assert store.identification_decided_at("i0") is None
    assert store.get_pending_probe("i2") == PendingProbeRecord(
        "i2", b"sealed", T0, "2026-01-03T00:00"
    )
    assert store.pending_probes_due("2026-01-02T23:00") == []
    assert store.pending_probes_due("2026-01-03T00:00") == ["i2"]
    assert store.pending_probe_ids() == ["i2"]
    with store.transaction():
        assert store.delete_pending_probe("i2") and not store.delete_pending_probe("i2")
    assert store.get_pending_probe("i2") is None
    assert store.pending_probe_ids() == []


def test_undecided_identifications_naming_a_subject_match_that_id_exactly(
    store: Store,
) -> None:
    """The filter a withdrawal or erasure uses: the subject's id, never a longer id
    holding it, nor one its ``_`` or ``.`` would match as a pattern; decided ones
    left out; pages as without the filter."""
    named = {"i0": ("k_fi",), "i1": ("kofi", "x"), "i2": ("kofi-2",), "i3": ("akofi",),
             "i4": ("x", "kofi"), "i5": ("kofi",), "i6": ("k.fi",)}
    with store.transaction():
        for n, (identification_id, subjects) in enumerate(named.items()):
            started = f"2026-01-01T00:00:0{n}+00:00"
            store.insert_identification(IdentificationRecord(
                identification_id, "boarding", "officer", None, "ff" * 32, "m", "op", 0.6,
                started, started, tuple((s, 0.3, r) for r, s in enumerate(subjects, 1)),
            ))
        store.mark_identification_decided("i5", T0)

    def ids(naming: str, after: tuple[str, str] | None = None, limit: int = 10) -> list[str]:
        return [r.identification_id
                for r in store.undecided_identifications(after, limit, naming=naming)]

    assert ids("kofi") == ["i1", "i4"]
    assert ids("k_fi") == ["i0"]
    assert ids("k.fi") == ["i6"]
    assert ids("kof") == []
    first = store.undecided_identifications(None, 1, naming="kofi")
    assert [r.identification_id for r in first] == ["i1"]
    assert ids("kofi", (first[0].started_at, "i1"), 1) == ["i4"]


def test_an_identification_closed_undecided_keeps_why(store: Store) -> None:
    """Closed (no candidate eligible any more): decided, with each candidate's reason;
    an identification already decided is never closed over its decision."""
    with store.transaction():
        for n in range(2):
            store.insert_identification(IdentificationRecord(
                f"i{n}", "boarding", "officer", None, "ff" * 32, "m", "op", 0.6, T0, T0,
                (("s1", 0.3, 1), ("s2", 0.4, 2)),
            ))
        store.mark_identification_decided("i1", T0)
    why = {"s1": "the subject was erased", "s2": "consent to boarding withdrawn"}
    later = "2026-01-02T00:00:00+00:00"
    with store.transaction():
        assert store.close_identification("i0", later, why)
        assert not store.close_identification("i0", later, why)
        assert not store.close_identification("i1", later, why)
    assert store.identification_closure("i0") == why
    assert store.identification_decided_at("i0") == later
    assert store.identification_closure("i1") is None
    assert store.identification_decided_at("i1") == T0
    assert store.identification_closure("nope") is None
    assert store.undecided_identifications(None, 10) == []


def test_secrets_meta_and_audit(store: Store) -> None:
    with store.transaction():
        store.set_meta("gallery_id", "g")
        store.put_secret("audit_key", b"wrapped")
        for seq in (1, 2, 3):
            store.append_audit(
                AuditRecord(seq, T0, "k", "a", None, ("s1",), "{}", f"{seq - 1}", f"{seq}")
            )
        store.set_audit_head(AuditHead(3, "3", "h"))
    assert store.get_meta("gallery_id") == "g" and store.get_secret("audit_key") == b"wrapped"
    assert [r.seq for r in store.audit_records()] == [1, 2, 3]
    assert [r.seq for r in store.audit_records(1)] == [2, 3]
    last = store.last_audit()
    assert last is not None and last.subject_ids == ("s1",)
    assert store.get_audit_head() == AuditHead(3, "3", "h")


def test_the_audit_log_is_append_only(store: Store) -> None:
    with store.transaction():
        store.append_audit(AuditRecord(1, T0, "k", None, None, (), "{}", "0", "1"))
    with pytest.raises(StoreError), store.transaction():
        store.append_audit(AuditRecord(1, T0, "k", None, None, (), "{}", "0", "forged"))
    assert [r.mac for r in store.audit_records()] == ["1"]


def test_keystore(keystore: KeyStore) -> None:
    with keystore.transaction():
        keystore.put_key("s1", b"wrapped-1")
        keystore.put_key("s2", b"wrapped-2")
        keystore.put_key("s1", b"wrapped-1b")
    assert keystore.get_key("s1") == b"wrapped-1b"
    assert sorted(keystore.subject_ids()) == ["s1", "s2"]
    assert keystore.all_keys() == {"s1": b"wrapped-1b", "s2": b"wrapped-2"}
    with keystore.transaction():
        for name in ("probe:a", "probe:b", "Probe:c", "probe", "x-probe:d", "probe_%"):
            keystore.put_key(name, b"w")
    assert sorted(keystore.names_starting("probe:")) == ["probe:a", "probe:b"]
    assert keystore.names_starting("probe_") == ["probe_%"]  # no wildcards
    with keystore.transaction():
        assert keystore.delete_key("s1") and not keystore.delete_key("s1")
    assert keystore.get_key("s1") is None
    keystore.reclaim()


def test_keystore_add_key_commits_alone_and_never_replaces(keystore: KeyStore) -> None:
    keystore.add_key("probe-1", b"wrapped-1", created_at=T0)
    with pytest.raises(RuntimeError), keystore.transaction():
        keystore.put_key("s9", b"wrapped-9")
        raise RuntimeError("the transaction after it fails")
    assert keystore.get_key("probe-1") == b"wrapped-1"  # committed on its own
    with pytest.raises(StoreError, match="same key exists"):
        keystore.add_key("probe-1", b"other", created_at=T0)
    assert keystore.get_key("probe-1") == b"wrapped-1"
    with pytest.raises(RuntimeError), keystore.transaction():
        keystore.add_key("probe-2", b"wrapped-2", created_at=T0)  # joins the open transaction
        raise RuntimeError("rolled back")
    assert keystore.get_key("probe-2") is None and keystore.get_key("s9") is None


def test_keystore_tells_when_the_keys_of_a_prefix_were_made(keystore: KeyStore) -> None:
    keystore.add_key("probe:old", b"w", created_at="2026-01-01T09:00:00+00:00")
    keystore.add_key("probe:new", b"w", created_at="2026-01-01T11:00:00.5+00:00")
    keystore.add_key("other:old", b"w", created_at="2026-01-01T09:00:00+00:00")
    with keystore.transaction():
        keystore.put_key("probe:unknown-age", b"w")  # not made by add_key
    assert keystore.made_at("probe:") == {
        "probe:old": "2026-01-01T09:00:00+00:00",
        "probe:new": "2026-01-01T11:00:00.5+00:00",
        "probe:unknown-age": None,
    }
    assert sorted(keystore.names_starting("probe:")) == [
        "probe:new", "probe:old", "probe:unknown-age"
    ]
    # a page at a time, in name order: the sweep reads every key this way
    first = keystore.made_at("", limit=2)
    assert len(first) == 2
    rest = keystore.made_at("", after=list(first)[-1], limit=10)
    assert set(first) | set(rest) == {"probe:old", "probe:new", "other:old",
                                      "probe:unknown-age"}
    assert not set(first) & set(rest)
    assert keystore.made_at("probe:", after="probe:old", limit=10) == {
        "probe:unknown-age": None
    }


def test_a_key_rewrapped_in_place_keeps_when_it_was_made(keystore: KeyStore) -> None:
    # a master-key rotation re-wraps every key with put_key: the time a key was made
    # must survive it, or the sweep's "an hour on" rule loses track of a left key
    keystore.add_key("probe:left", b"old-wrap", created_at="2026-01-01T09:00:00+00:00")
    with keystore.transaction():
        keystore.put_key("probe:left", b"new-wrap")
    assert keystore.get_key("probe:left") == b"new-wrap"
    assert keystore.made_at("probe:") == {"probe:left": "2026-01-01T09:00:00+00:00"}


def test_template_source_digest_round_trips(store: Store) -> None:
    template = TemplateRecord("t1", "s1", "m", b"c", T0, source_digest="d" * 64)
    with store.transaction():
        store.insert_subject(subject())
        store.insert_template(template)
    assert store.templates_of("s1") == [template]


def test_a_rule_broken_mid_transaction_rolls_the_whole_transaction_back(store: Store) -> None:
    with pytest.raises(StoreError), store.transaction():
        store.insert_subject(subject())
        store.insert_template(TemplateRecord("t1", "ghost", "m", b"x", T0))
    assert store.get_subject("s1") is None
    with store.transaction():  # the store is usable again
        store.insert_subject(subject())
    assert store.get_subject("s1") == subject()


def test_a_rule_broken_by_a_write_nobody_reads_back_refuses_the_commit(store: Store) -> None:
    # PostgreSQL pipelines a transaction's writes: this error first shows at the COMMIT
    with pytest.raises(StoreError, match="breaks a rule"), store.transaction():
        store.insert_subject(subject("s1"))
        store.insert_template(TemplateRecord("t1", "ghost", "m", b"x", T0))
        store.insert_subject(subject("s2"))
    assert store.get_subject("s1") is None and store.get_subject("s2") is None
    with store.transaction():
        store.insert_subject(subject("s1"))
        assert store.delete_biometrics("s1") == 0  # a count read mid-write waits for the answers
    assert store.get_subject("s1") == subject()


# change tracking -------------------------------------------------------------
def consent(consent_id: str = "c1", subject_id: str = "s1") -> ConsentRecord:
    return ConsentRecord(
        consent_id, subject_id, ("boarding",), T0, "2027-01-01T00:00:00+00:00", "f", "ab" * 32, "v1"
    )


def test_changes_since_reports_new_subjects_consents_and_templates(store: Store) -> None:
    start = store.generation()
    assert store.changes_since(start) == StoreChanges(start, [], [], [])
    template = TemplateRecord("t1", "s1", "m", b"c1", T0)
    with store.transaction():
        store.insert_subject(subject())
        store.insert_subject(subject("s2"))
        store.insert_consent(consent())
        store.insert_template(template)
        store.bump_generation()  # after writes: no second step
    after = store.generation()
    assert after == start + 1
    assert store.changes_since(start) == StoreChanges(after, [template], [], ["s1", "s2"])
    assert store.changes_since(after) == StoreChanges(after, [], [], [])


def test_changes_since_reports_reencryption_and_deletion(store: Store) -> None:
    with store.transaction():
        store.insert_subject(subject())
        store.insert_subject(subject("s2"))
        store.insert_template(TemplateRecord("t1", "s1", "m", b"c1", T0))
        store.insert_template(TemplateRecord("t2", "s2", "m", b"c2", T0))
    before = store.generation()
    with store.transaction():
        store.replace_template_ciphertext("t1", b"rekeyed")
    changes = store.changes_since(before)
    assert changes is not None and changes.subject_ids == [] and changes.removed_templates == []
    assert [(t.template_id, t.ciphertext) for t in changes.templates] == [("t1", b"rekeyed")]
    middle = store.generation()
    with store.transaction():
        store.delete_biometrics("s2")
    changes = store.changes_since(middle)
    assert changes is not None and changes.templates == [] and changes.removed_templates == ["t2"]
    # a reader two changes behind gets both
    changes = store.changes_since(before)
    assert changes is not None and [t.template_id for t in changes.templates] == ["t1"]
    assert changes.removed_templates == ["t2"]


def test_changes_since_reports_withdrawal_erasure_and_touch(store: Store) -> None:
    with store.transaction():
        for name in ("s1", "s2", "s3"):
            store.insert_subject(subject(name))
        store.insert_consent(consent("c1", "s1"))
    for change, expected in (
        (lambda: store.withdraw_consent("c1", T0, "asked"), ["s1"]),
        (lambda: store.mark_subject_erased("s2", T0), ["s2"]),
        (lambda: store.touch_subject("s3", "2026-02-01T00:00:00+00:00"), ["s3"]),
    ):
        before = store.generation()
        with store.transaction():
            change()
        changes = store.changes_since(before)
        assert store.generation() == before + 1
        assert changes is not None and changes.subject_ids == expected


def test_a_write_after_reading_the_generation_moves_it_again(store: Store) -> None:
    with store.transaction():
        store.insert_subject(subject())
        seen = store.generation()  # e.g. an index refreshed inside a batch
        store.insert_template(TemplateRecord("t1", "s1", "m", b"c1", T0))
        assert store.generation() == seen + 1
        changes = store.changes_since(seen)
        assert changes is not None and [t.template_id for t in changes.templates] == ["t1"]
        store.bump_generation()  # read since: a step
        assert store.generation() == seen + 2
        store.insert_template(TemplateRecord("t2", "s1", "m", b"c2", T0))
        store.bump_generation()  # nothing read since the write: no step
        assert store.generation() == seen + 3


def test_changes_since_is_none_beyond_the_kept_tombstones_or_ahead(store: Store) -> None:
    store.keep_removals = 2  # type: ignore[attr-defined]
    with store.transaction():
        for n in range(4):
            store.insert_subject(subject(f"s{n}"))
            store.insert_template(TemplateRecord(f"t{n}", f"s{n}", "m", b"c", T0))
    first = store.generation()
    generations = []
    for n in range(4):
        with store.transaction():
            store.delete_biometrics(f"s{n}")
        generations.append(store.generation())
    assert store.changes_since(first) is None  # t0's and t1's tombstones were pruned
    assert store.changes_since(generations[0]) is None
    changes = store.changes_since(generations[1])
    assert changes is not None and changes.removed_templates == ["t2", "t3"]
    assert store.changes_since(store.generation() + 1) is None
    assert store.changes_since(-1) is None


def test_bulk_reads_by_subject_and_model(store: Store) -> None:
    with store.transaction():
        for n in range(3):
            store.insert_subject(subject(f"s{n}"))
            store.insert_consent(consent(f"c{n}", f"s{n}"))
            store.insert_template(TemplateRecord(f"t{n}", f"s{n}", f"m{n % 2}", b"c", T0))
    assert store.template_model_ids() == ["m0", "m1"]
    found = store.get_subjects(["s2", "s0", "ghost", "s0"])
    assert sorted(s.subject_id for s in found) == ["s0", "s2"]
    assert sorted(c.consent_id for c in store.consents_of_subjects(["s1", "s2"])) == ["c1", "c2"]
    assert store.get_subjects([]) == [] and store.consents_of_subjects([]) == []


def test_subjects_with_biometrics_by_template_or_photo(store: Store) -> None:
    with store.transaction():
        for n in range(4):
            store.insert_subject(subject(f"s{n}"))
        store.insert_template(TemplateRecord("t0", "s0", "m", b"c", T0))
        store.insert_template(TemplateRecord("t0b", "s0", "m", b"c", T0))
        store.insert_photo(PhotoRecord("p1", "s1", b"photo", T0))
        store.insert_template(TemplateRecord("t3", "s3", "m", b"c", T0))
    assert store.subjects_with_biometrics(["s0", "s1", "s2", "ghost"]) == {"s0", "s1"}
    assert store.subjects_with_biometrics([]) == set()


def test_eligibility_columns_list_live_subjects_and_active_consents(store: Store) -> None:
    assert store.eligibility_columns() == EligibilityColumns([], [], [], [], [])
    later = "2026-03-01T00:00:00+00:00"
    with store.transaction():
        for n in range(3):
            store.insert_subject(subject(f"s{n}"))
        store.insert_consent(consent("c0", "s0"))
        store.insert_consent(ConsentRecord(
            "c1", "s1", ("boarding", "audit"), T0, later, "f", "ab" * 32, "v1"
        ))
        store.insert_consent(consent("c2", "s1"))
        store.insert_consent(consent("c3", "s2"))
        store.touch_subject("s1", later)
        store.withdraw_consent("c2", T0, "asked")
        store.mark_subject_erased("s2", T0)
    columns = store.eligibility_columns()
    subjects = sorted(zip(columns.subject_ids, columns.last_interaction_at, strict=True))
    assert subjects == [("s0", T0), ("s1", later)]  # s2 erased
    consents = sorted(zip(columns.consent_subject_ids, columns.consent_purposes,
                          columns.consent_expires_at, strict=True))
    assert consents == [  # c2 withdrawn; an erased subject's consents are the caller's to skip
        ("s0", ("boarding",), "2027-01-01T00:00:00+00:00"),
        ("s1", ("boarding", "audit"), later),
        ("s2", ("boarding",), "2027-01-01T00:00:00+00:00"),
    ]


def test_keystore_get_keys(keystore: KeyStore) -> None:
    with keystore.transaction():
        for n in range(700):  # more than one chunk of an IN list
            keystore.put_key(f"s{n}", f"w{n}".encode())
    keys = keystore.get_keys([f"s{n}" for n in range(0, 700, 2)] + ["ghost"])
    assert len(keys) == 350 and keys["s698"] == b"w698"
    assert keystore.get_keys([]) == {}


def _drop_connection(store: PostgresStore) -> None:
    """End the store's server connection, as a PostgreSQL restart or failover does."""
    import psycopg

    pid = store.connection.info.backend_pid
    with psycopg.connect(store.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_postgres_store_opens_a_lost_connection_again(postgres_url: NewDatabase) -> None:
    store = PostgresStore(postgres_url(), create=True)
    try:
        with store.transaction():
            store.insert_subject(subject("s1"))
        _drop_connection(store)
        assert store.generation() >= 1  # a read outside a transaction is sent again
        _drop_connection(store)
        with store.transaction():  # so is the BEGIN of a write
            store.insert_subject(subject("s2"))
        with pytest.raises(StoreUnavailable, match="cannot be reached"), store.transaction():
            store.insert_subject(subject("s3"))
            _drop_connection(store)
            store.insert_subject(subject("s4"))  # mid-transaction: not resent, refused
        refused = pytest.raises(StoreUnavailable, match="nothing of it was stored")
        with refused, store.transaction():
            store.insert_subject(subject("s5"))
            _drop_connection(store)
            with pytest.raises(StoreUnavailable):
                store.insert_subject(subject("s6"))  # caught here: the commit refuses
        with store.snapshot():
            ids = sorted(s.subject_id for s in store.list_subjects())
        assert ids == ["s1", "s2"]  # nothing of the interrupted writes was kept
    finally:
        store.close()


def test_the_service_database_opens_a_lost_connection_again(postgres_url: NewDatabase) -> None:
    import psycopg

    database = open_service_database(postgres_url())
    try:
        pid = database.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable, match="opened again on the next call"):
            database.execute("SELECT 1")
        assert database.execute("SELECT 1").fetchone()[0] == 1
    finally:
        database.close()


def test_concurrent_postgres_writers_never_hide_a_change_from_a_reader(
    postgres_url: NewDatabase,
) -> None:
    url = postgres_url()
    setup = PostgresStore(url, create=True)
    with setup.transaction():
        setup.insert_subject(subject())
    setup.close()
    reader = PostgresStore(url)
    writers = [PostgresStore(url) for _ in range(2)]
    inserted: list[str] = []
    seen: set[str] = set()

    def write(number: int) -> None:
        for n in range(25):
            with writers[number].transaction():
                template_id = f"w{number}-{n}"
                writers[number].insert_template(TemplateRecord(template_id, "s1", "m", b"c", T0))
                inserted.append(template_id)

    generation = reader.generation()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        changes = reader.changes_since(generation)
        assert changes is not None
        seen.update(t.template_id for t in changes.templates)
        generation = changes.generation
    for thread in threads:
        thread.join()
    last = reader.changes_since(generation)
    assert last is not None
    seen.update(t.template_id for t in last.templates)
    assert len(inserted) == 50 and seen == set(inserted)
    for store in (reader, *writers):
        store.close()


def test_a_postgres_writer_waiting_on_another_is_seen_after_it(
    postgres_url: NewDatabase,
) -> None:
    url = postgres_url()
    first, second, reader = (PostgresStore(url, create=True) for _ in range(3))
    with first.transaction():
        first.insert_subject(subject())
    started = threading.Event()

    def write_second() -> None:
        started.set()
        with second.transaction():  # waits for the first writer's lock
            second.insert_template(TemplateRecord("t2", "s1", "m", b"c", T0))

    with first.transaction():
        first.insert_template(TemplateRecord("t1", "s1", "m", b"c", T0))
        seen = reader.generation()  # before either commit
        thread = threading.Thread(target=write_second)
        thread.start()
        started.wait()
    thread.join()
    changes = reader.changes_since(seen)
    assert changes is not None
    assert [t.template_id for t in changes.templates] == ["t1", "t2"]
    for store in (first, second, reader):
        store.close()


def test_in_transaction_tells_a_write_transaction(store: Store) -> None:
    assert not store.in_transaction()
    with store.snapshot():
        assert not store.in_transaction()
    with pytest.raises(RuntimeError), store.transaction():
        assert store.in_transaction()
        raise RuntimeError("rolled back")
    assert not store.in_transaction()
    with store.transaction():
        assert store.in_transaction()
    assert not store.in_transaction()


def test_batch_queue_claims_leases_and_abandons(store: Store) -> None:
    photos = [QueuedPhoto("q", f"p{i}.jpg", f"s{i // 2}", "waiting", updated_at=T0)
              for i in range(5)]
    with store.transaction():
        assert store.queue_photos(photos) == 5
        assert store.queue_photos(photos[:2]) == 0  # kept as they are
    t1, t2, t3 = (f"2026-01-01T00:0{m}:00+00:00" for m in (1, 2, 3))
    with store.transaction():
        first = store.claim_queued("q", "a", now=T0, lease_until=t1, limit=2, max_attempts=2)
        second = store.claim_queued("q", "b", now=T0, lease_until=t1, limit=2, max_attempts=2)
    assert [p.photo for p in first] == ["p0.jpg", "p1.jpg"]  # subject, then photo order
    assert [p.photo for p in second] == ["p2.jpg", "p3.jpg"]
    assert {p.state for p in first + second} == {"claimed"} and first[0].attempts == 1
    with store.transaction():
        assert store.finish_queued("q", ["p2.jpg"], state="done", at=T0) == 1
        assert store.finish_queued("q", ["p3.jpg"], state="failed", at=T0, reason="no-face",
                                   message="No face.") == 1
        assert store.finish_queued("q", ["p2.jpg"], state="failed", at=T0) == 0  # done stays
        # a's lease has ended: its photos go to c, then to nobody (abandoned after 2 claims)
        taken = store.claim_queued("q", "c", now=t2, lease_until=t3, limit=5, max_attempts=2)
    assert [p.photo for p in taken] == ["p0.jpg", "p1.jpg", "p4.jpg"]
    assert [p.attempts for p in taken] == [2, 2, 1]
    with store.transaction():
        assert store.claim_queued("q", "d", now="2026-01-02", lease_until="2026-01-03",
                                  limit=5, max_attempts=2) == [store.queued("q", "claimed")[-1]]
    states = {p.photo: (p.state, p.reason) for p in store.queued("q")}
    assert states == {
        "p0.jpg": ("failed", "abandoned"), "p1.jpg": ("failed", "abandoned"),
        "p2.jpg": ("done", None), "p3.jpg": ("failed", "no-face"), "p4.jpg": ("claimed", None),
    }
    assert store.queue_names() == ["q"]
