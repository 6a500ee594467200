"""Erasure: consent withdrawal, ``forget`` and the retention sweep.

Erasure destroys the subject's data key first (crypto-shredding: from that
moment every copy of the subject's ciphertext, in backups too, is unreadable),
then deletes the templates and photos with ``secure_delete`` on and truncates
the write-ahead log, so the template bytes remain in no file of the gallery.
The saved search graph (:mod:`.index_file`) holds every subject's templates:
its key is destroyed and its file deleted, before and again after the store
change; each process's in-memory index drops the templates at its next search
(at once in the erasing process).
The consent history and the audit log are kept; they hold no biometric data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .consent import consent_status
from .types import ErasureResult, SweepResult, WithdrawalResult

if TYPE_CHECKING:
    from .core import Gallery


def erase_subject(
    gallery: Gallery, subject_id: str, *, actor: str, reason: str, forget: bool
) -> ErasureResult:
    """Destroy the subject's key, templates and photos; with ``forget``, the subject too."""
    store, keystore = gallery.store, gallery.keystore
    with store.snapshot():
        gallery._subject_record(subject_id)
    with keystore.transaction():
        destroyed = keystore.delete_key(subject_id)
        gallery._drop_index_files()  # the saved graph holds the subject's templates
    keystore.reclaim()
    stamp = gallery._stamp()
    with store.transaction():
        rows = store.delete_biometrics(subject_id)
        count_removal(gallery)
        if forget:
            for consent in store.consents_of(subject_id):
                if consent.withdrawn_at is None:
                    store.withdraw_consent(consent.consent_id, stamp, "subject erased")
            store.mark_subject_erased(subject_id, stamp)
        store.bump_generation()
        event = gallery.audit.append(
            "erase",
            actor=actor,
            subject_ids=[subject_id],
            reason=reason,
            rows_deleted=rows,
            key_destroyed=destroyed,
            subject_forgotten=forget,
        )
    gallery._drop_index_files()  # again: one may have been saved meanwhile
    keystore.reclaim()
    store.reclaim()
    return ErasureResult(subject_id, reason, rows, destroyed, forget, event.seq)


def count_removal(gallery: Gallery) -> None:
    """Bump the store's count of template removals (inside a store transaction).

    A process saving its graph index compares the count before and after
    writing, and withdraws its file when templates were removed meanwhile.
    """
    from .core import REMOVALS_META

    count = gallery.store.get_meta(REMOVALS_META)
    gallery.store.set_meta(REMOVALS_META, str(int(count or 0) + 1))


def withdraw_consent(
    gallery: Gallery,
    subject_id: str,
    consent_id: str | None,
    *,
    actor: str,
    reason: str,
) -> WithdrawalResult:
    """Withdraw one consent (or every active one); erase when none remains active."""
    from ..errors import InvalidParameter

    store = gallery.store
    now = gallery._now()
    with store.transaction():
        gallery._subject_record(subject_id)
        consents = store.consents_of(subject_id)
        chosen = [
            c
            for c in consents
            if consent_status(c, now) != "withdrawn"
            and (consent_id is None or c.consent_id == consent_id)
        ]
        if consent_id is not None and not chosen:
            raise InvalidParameter(
                f"Subject {subject_id!r} has no consent {consent_id!r} that can be withdrawn. "
                "See `facetrust consent show`."
            )
        for consent in chosen:
            store.withdraw_consent(consent.consent_id, now.isoformat(), reason)
        store.touch_subject(subject_id, now.isoformat())
        store.bump_generation()
        event = gallery.audit.append(
            "consent.withdraw",
            actor=actor,
            subject_ids=[subject_id],
            consent_ids=[c.consent_id for c in chosen],
            reason=reason,
        )
        remaining = [c for c in store.consents_of(subject_id) if consent_status(c, now) == "active"]
    erasure = None
    if not remaining:
        erasure = erase_subject(
            gallery, subject_id, actor=actor, reason="consent withdrawn", forget=False
        )
    return WithdrawalResult(subject_id, tuple(c.consent_id for c in chosen), erasure, event.seq)


def sweep_retention(gallery: Gallery, *, actor: str) -> SweepResult:
    """Erase every subject past retention (and forget it) or without active consent.

    A subject past retention (``config.retention_days`` after the last
    interaction) is forgotten entirely; one whose consents all lapsed keeps
    its record and consent history, but loses its biometric data.
    """
    store, keystore = gallery.store, gallery.keystore
    now = gallery._now()
    with store.snapshot():
        subjects = store.list_subjects()
        plans = []
        for subject in subjects:
            has_data = bool(store.templates_of(subject.subject_id)) or bool(
                store.photos_of(subject.subject_id)
            )
            has_key = keystore.get_key(subject.subject_id) is not None
            past_retention = gallery._retention_until(subject) <= now
            lapsed = not any(
                consent_status(c, now) == "active" for c in store.consents_of(subject.subject_id)
            )
            if past_retention:
                plans.append((subject.subject_id, "retention period ended", True))
            elif lapsed and (has_data or has_key):
                plans.append((subject.subject_id, "no active consent", False))
    erased = []
    for subject_id, reason, forget in plans:
        erase_subject(gallery, subject_id, actor=actor, reason=reason, forget=forget)
        erased.append(subject_id)
    event = gallery.audit.append(
        "retention.sweep",
        actor=actor,
        subject_ids=erased,
        checked=len(subjects),
        erased=len(erased),
        retention_days=gallery.config.retention_days,
    )
    return SweepResult(tuple(erased), event.seq)
