"""Stored responses of keyed requests (``Idempotency-Key``), on every Store.

Runs against SQLite and a real PostgreSQL, like the conformance suite.
"""

from __future__ import annotations

import pytest

from facetrust.errors import StoreError
from facetrust.store import IdempotencyRecord, Store, SubjectRecord, TemplateRecord

T0 = "2026-01-01T00:00:00+00:00"
LATER = "2026-01-02T00:00:00+00:00"


def record(key: str = "k1", *, principal: str = "key-a", subject_id: str | None = "s1",
           biometric: bool = False, expires_at: str = LATER) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal=principal, key=key, request_sha256="ab" * 32, status=201,
        response='{"subject_id": "s1"}', subject_id=subject_id, biometric=biometric,
        created_at=T0, expires_at=expires_at,
    )


def test_a_stored_response_round_trips_per_principal(store: Store) -> None:
    with store.transaction():
        store.put_idempotency(record())
        store.put_idempotency(record(principal="key-b"))  # same key, another client
    assert store.get_idempotency("key-a", "k1") == record()
    assert store.get_idempotency("key-b", "k1") == record(principal="key-b")
    assert store.get_idempotency("key-a", "other") is None


def test_a_key_is_stored_once(store: Store) -> None:
    with store.transaction():
        store.put_idempotency(record())
    with pytest.raises(StoreError), store.transaction():
        store.put_idempotency(record())
    assert store.get_idempotency("key-a", "k1") == record()


def test_a_stored_response_rolls_back_with_its_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_subject(SubjectRecord("s1", None, T0, T0))
        store.put_idempotency(record())
        raise RuntimeError("crash before commit")
    assert store.get_idempotency("key-a", "k1") is None
    assert store.get_subject("s1") is None


def test_expired_responses_are_purged(store: Store) -> None:
    with store.transaction():
        store.put_idempotency(record("old", expires_at=T0))
        store.put_idempotency(record("new", expires_at=LATER))
    with store.transaction():
        assert store.purge_idempotency("2026-01-01T12:00:00+00:00") == 1
    assert store.get_idempotency("key-a", "old") is None
    assert store.get_idempotency("key-a", "new") is not None


def test_erasure_deletes_the_subjects_stored_responses(store: Store) -> None:
    with store.transaction():
        store.insert_subject(SubjectRecord("s1", "Name", T0, T0))
        store.insert_subject(SubjectRecord("s2", "Other", T0, T0))
        store.put_idempotency(record("create"))
        store.put_idempotency(record("enrol", biometric=True))
        store.put_idempotency(record("other", subject_id="s2", biometric=True))
        store.put_idempotency(record("none", subject_id=None))
    with store.transaction():
        store.mark_subject_erased("s1", LATER)
    assert store.get_idempotency("key-a", "create") is None
    assert store.get_idempotency("key-a", "enrol") is None
    assert store.get_idempotency("key-a", "other") is not None
    assert store.get_idempotency("key-a", "none") is not None


def test_removing_the_display_name_deletes_the_subjects_stored_responses(store: Store) -> None:
    with store.transaction():
        store.insert_subject(SubjectRecord("s1", "Name", T0, T0))
        store.put_idempotency(record("create"))
    with store.transaction():
        store.remove_display_name("s1")
    assert store.get_idempotency("key-a", "create") is None


def test_deleting_biometrics_deletes_only_the_biometric_responses(store: Store) -> None:
    with store.transaction():
        store.insert_subject(SubjectRecord("s1", "Name", T0, T0))
        store.insert_template(TemplateRecord("t1", "s1", "m", b"cipher", T0))
        store.put_idempotency(record("create"))
        store.put_idempotency(record("enrol", biometric=True))
    with store.transaction():
        assert store.delete_biometrics("s1") == 1  # the template; stored responses not counted
    assert store.get_idempotency("key-a", "create") is not None
    assert store.get_idempotency("key-a", "enrol") is None
