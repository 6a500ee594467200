"""The conformance suite every Store and KeyStore implementation must pass.

Parametrised over store factories: add a PostgreSQL factory to ``STORES`` and
``KEYSTORES`` and the same tests run against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facetrust.errors import StoreError
from facetrust.store import (
    AuditHead,
    AuditRecord,
    ConsentRecord,
    IdentificationRecord,
    KeyStore,
    PhotoRecord,
    ReviewRecord,
    SqliteKeyStore,
    SqliteStore,
    Store,
    SubjectRecord,
    TemplateRecord,
)

T0 = "2026-01-01T00:00:00+00:00"

STORES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda folder: SqliteStore(folder / "gallery.db", create=True),
}
KEYSTORES: dict[str, Callable[[Path], KeyStore]] = {
    "sqlite": lambda folder: SqliteKeyStore(folder / "keys.db", create=True),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    instance = STORES[request.param](tmp_path)
    yield instance
    instance.close()


@pytest.fixture(params=sorted(KEYSTORES))
def keystore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    instance = KEYSTORES[request.param](tmp_path)
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
        "c1", "s1", ("boarding", "access-control"), T0, "2027-01-01T00:00:00+00:00",
        "form-1", "ab" * 32, "v1",
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
    record = IdentificationRecord("i1", "boarding", "officer", None, "ff" * 32, "m", "op", 0.6,
                                  T0, T0, (("s1", 0.3, 1), ("s2", 0.5, 2)))
    with store.transaction():
        store.insert_identification(record)
        store.insert_review(ReviewRecord("i1", "s1", "alice", "confirm", T0))
        store.insert_review(ReviewRecord("i1", "s1", "bob", "confirm", T0, "ok"))
    assert store.get_identification("i1") == record
    assert [r.reviewer for r in store.reviews_of("i1")] == ["alice", "bob"]


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
        assert keystore.delete_key("s1") and not keystore.delete_key("s1")
    assert keystore.get_key("s1") is None
    keystore.reclaim()
