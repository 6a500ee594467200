"""The batch queue's upkeep on every Store: failed photos put back for a subject
(``requeue_failed``: a corrected consent CSV) and a subject's rows deleted
(``forget_queued``: erasure), a stopped worker's claims handed back
(``release_claims``) and corrected CSV rows dropped (``drop_failed``), on SQLite and on
the real PostgreSQL."""

from __future__ import annotations

from facetrust.store import QueuedPhoto, Store
from store.test_store_conformance import T0

T1 = "2026-01-01T00:01:00+00:00"


def test_failed_photos_are_put_back_for_their_subject_and_erasure_deletes_rows(
    store: Store,
) -> None:
    photos = [
        QueuedPhoto("q", "a.jpg", None, "failed", attempts=0, reason="no-consent-in-csv",
                    message="No row.", updated_at=T0),
        QueuedPhoto("q", "b.jpg", "s2", "failed", attempts=2, reason="no-face",
                    message="No face.", updated_at=T0),
        QueuedPhoto("q", "c.jpg", "s3", "done", updated_at=T0),
        QueuedPhoto("other", "a.jpg", None, "failed", reason="no-consent-in-csv",
                    updated_at=T0),
    ]
    with store.transaction():
        store.queue_photos(photos)
        # only photos failed for that reason come back, in that queue
        assert store.requeue_failed(
            "q", {"a.jpg": "s1", "b.jpg": "s2", "c.jpg": "s3"}, reason="no-consent-in-csv",
            at=T1,
        ) == 1
    back = store.queued("q", "waiting")
    assert back == [QueuedPhoto("q", "a.jpg", "s1", "waiting", None, None, 0, None, None, T1)]
    assert [p.state for p in store.queued("q")] == ["waiting", "failed", "done"]
    assert store.queued("other")[0].state == "failed"
    with store.transaction():
        assert store.forget_queued("s1") == 1
    assert [p.photo for p in store.queued("q")] == ["b.jpg", "c.jpg"]


def test_a_stopped_workers_claims_go_back_to_waiting_without_an_attempt(store: Store) -> None:
    photos = [
        QueuedPhoto("q", "a.jpg", "s1", "claimed", "w1", T1, 1, updated_at=T0),
        QueuedPhoto("q", "b.jpg", "s1", "claimed", "w1", T1, 3, updated_at=T0),
        QueuedPhoto("q", "c.jpg", "s2", "claimed", "w2", T1, 1, updated_at=T0),
        QueuedPhoto("q", "d.jpg", "s2", "done", "w1", None, 1, updated_at=T0),
        QueuedPhoto("other", "a.jpg", "s1", "claimed", "w1", T1, 1, updated_at=T0),
    ]
    with store.transaction():
        store.queue_photos(photos)
        assert store.release_claims("q", "w1", at=T1) == 2
    assert store.queued("q", "waiting") == [
        QueuedPhoto("q", "a.jpg", "s1", "waiting", None, None, 0, None, None, T1),
        QueuedPhoto("q", "b.jpg", "s1", "waiting", None, None, 2, None, None, T1),
    ]
    assert [(p.photo, p.state) for p in store.queued("q")] == [
        ("a.jpg", "waiting"), ("b.jpg", "waiting"), ("c.jpg", "claimed"), ("d.jpg", "done")]
    assert store.queued("other")[0].state == "claimed"


def test_failed_rows_of_a_reason_are_dropped(store: Store) -> None:
    photos = [
        QueuedPhoto("q", "alice.jpg", "alice", "failed", reason="photo-not-found",
                    updated_at=T0),
        QueuedPhoto("q", "x.jpg", None, "failed", reason="no-consent-in-csv", updated_at=T0),
        QueuedPhoto("q", "y.jpg", "s", "done", updated_at=T0),
        QueuedPhoto("other", "alice.jpg", "alice", "failed", reason="photo-not-found",
                    updated_at=T0),
    ]
    with store.transaction():
        store.queue_photos(photos)
        assert store.drop_failed("q", ["alice.jpg", "x.jpg", "y.jpg"],
                                 reason="photo-not-found") == 1
    assert sorted(p.photo for p in store.queued("q")) == ["x.jpg", "y.jpg"]
    assert len(store.queued("other")) == 1
