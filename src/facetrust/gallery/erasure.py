"""Erasure: consent withdrawal, ``forget`` and the retention sweep.

Erasure first takes the subject out of every search and review, in one
transaction with an ``erase.started`` audit event (a forgotten subject's
consents are withdrawn; a subject erased otherwise has no active consent left),
then destroys the subject's data key (crypto-shredding: from that
moment every copy of the subject's ciphertext, in backups too, is unreadable),
then deletes the templates and photos with ``secure_delete`` on and truncates
the write-ahead log, so the template bytes remain in no file of the gallery.
The saved search graph (:mod:`.index_file`) holds every subject's templates:
its key is destroyed and its file deleted, before and again after the store
change; each process's in-memory index drops the templates at its next search
(at once in the erasing process).
The subject's rows in batch enrolment queues go too (their photo paths may
name the person), whichever way the subject is erased.
The consent history and the audit log are kept; they hold no biometric data.
A probe photo kept for review (:mod:`.pending`) of a search in which the
subject was a candidate may be a photo of the subject: it is deleted with them.
The sweep also deletes the probes of identifications still awaiting review
after ``config.pending_probe_hours``. An identification whose every candidate
still awaiting review has lost eligibility is closed (:mod:`.closing`) by the
withdrawal or erasure that caused it, or by the sweep when consent expiry or the
end of retention did.

A process killed half-way through an erasure leaves a subject without active
consent (so out of every search, the in-database one included, and of every
review) and an ``erase.started`` event with no ``erase`` after it; the next
retention sweep finishes the erasure (reason "an interrupted erasure" once the
key is gone, else "no active consent"), and the sweep after it forgets a
subject that was being forgotten.

A batch enrolment commits a new subject's data key just before the subject
(:meth:`Gallery.batch`). A process killed in between leaves the key of a
subject that does not exist; a re-run uses it, and otherwise the sweep destroys
it once it is :data:`~.pending.UNSTORED_KEY_HOURS` old (``data-key.destroyed``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..errors import InvalidParameter
from ..store.base import ConsentRecord
from .checks import check_name, check_text
from .closing import (
    close_undecidable,
    shred_closed_probes,
    sweep_undecidable,
    undecided_with_candidate,
)
from .consent import consent_status
from .indexes import count_removal
from .parts import GalleryParts
from .pending import UNSTORED_KEY_HOURS, discard_probe, sweep_pending_probes
from .subjects import subject_record
from .types import ErasureResult, SweepResult, WithdrawalResult

#: Subjects the sweep reads at a time: a few queries per page, never per subject.
SWEEP_PAGE = 5000


def erase_subject(
    parts: GalleryParts, subject_id: str, *, actor: str, reason: str, forget: bool
) -> ErasureResult:
    """Destroy the subject's key, templates and photos; with ``forget``, the subject too."""
    actor = check_name(actor, "actor")
    reason = check_text(reason, "reason")
    store, keystore = parts.store, parts.keystore
    stamp = parts.stamp()
    # First, durably: the subject leaves every search and review (a forgotten
    # subject's consents end; any other erased subject has none active) and the
    # log says an erasure began. A process killed from here on leaves a subject
    # without active consent, whose data the retention sweep erases.
    with store.transaction():
        subject_record(parts, subject_id)
        ended = _end_consents(parts, subject_id, stamp) if forget else []
        store.bump_generation()
        parts.audit.append(
            "erase.started",
            actor=actor,
            subject_ids=[subject_id],
            reason=reason,
            subject_forgotten=forget,
            consent_ids=ended,
        )
    destroyed = bool(parts.keyring.destroy_data_keys([subject_id]))
    parts.pause("erase:key-destroyed")
    parts.indexes.drop_files()  # the saved index holds the subject's templates
    keystore.reclaim()
    with store.transaction():
        rows = store.delete_biometrics(subject_id)
        count_removal(store)
        store.remove_display_name(subject_id)  # personal data: leaves with the biometrics
        store.forget_queued(subject_id)  # batch queue rows: their photo paths may name them
        if forget:
            _end_consents(parts, subject_id, stamp)  # one granted meanwhile ends too
            store.mark_subject_erased(subject_id, stamp)
        store.bump_generation()
        event = parts.audit.append(
            "erase",
            actor=actor,
            subject_ids=[subject_id],
            reason=reason,
            rows_deleted=rows,
            key_destroyed=destroyed,
            subject_forgotten=forget,
        )
    parts.indexes.drop_files()  # again: one may have been saved meanwhile
    keystore.reclaim()
    store.reclaim()
    # cases left with no eligible candidate are closed (their probes go with the
    # closure); the others lose their probe, which may be a photo of the subject
    searches = undecided_with_candidate(parts, subject_id)
    closed = close_undecidable(parts, searches, actor=actor) if searches else []
    probes = shred_closed_probes(parts, closed, actor=actor) + sum(
        discard_probe(parts, identification_id, actor=actor,
                      reason=f"candidate {subject_id} was erased")
        for identification_id in searches if identification_id not in closed
    )
    return ErasureResult(subject_id, reason, rows, destroyed, forget, event.seq, probes)


def _end_consents(parts: GalleryParts, subject_id: str, stamp: str) -> list[str]:
    """Withdraw every consent of the subject not yet withdrawn; returns their ids."""
    ended = [c.consent_id for c in parts.store.consents_of(subject_id) if c.withdrawn_at is None]
    for consent_id in ended:
        parts.store.withdraw_consent(consent_id, stamp, "subject erased")
    return ended


def withdraw_consent(
    parts: GalleryParts,
    subject_id: str,
    consent_id: str | None,
    *,
    actor: str,
    reason: str,
) -> WithdrawalResult:
    """Withdraw one consent (or every active one); erase when none remains active."""
    actor = check_name(actor, "actor")
    reason = check_text(reason, "reason")
    store = parts.store
    now = parts.now()
    with store.transaction():
        subject_record(parts, subject_id)
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
        event = parts.audit.append(
            "consent.withdraw",
            actor=actor,
            subject_ids=[subject_id],
            consent_ids=[c.consent_id for c in chosen],
            reason=reason,
        )
        remaining = [c for c in store.consents_of(subject_id) if consent_status(c, now) == "active"]
        # identifications whose last eligible candidates this withdrawal ends are
        # closed with it (they leave the review queues in the same commit)
        closed = close_undecidable(parts, undecided_with_candidate(parts, subject_id),
                                   actor=actor)
    shred_closed_probes(parts, closed, actor=actor)
    erasure = None
    if not remaining:
        erasure = erase_subject(
            parts, subject_id, actor=actor, reason="consent withdrawn", forget=False
        )
    return WithdrawalResult(subject_id, tuple(c.consent_id for c in chosen), erasure, event.seq)


def sweep_retention(parts: GalleryParts, *, actor: str) -> SweepResult:
    """Erase every subject past retention (and forget it) or without active consent.

    A subject past retention (``config.retention_days`` after the last
    interaction) is forgotten entirely. One whose consents all lapsed loses
    its biometric data and display name; at the next sweep, with nothing but
    ended consents left, it is forgotten too (a tombstone: the opaque id, the
    erasure time, the consent history and the audit trail). A subject never
    given consent is left alone until its retention ends (consent may follow
    registration).
    """
    actor = check_name(actor, "actor")
    plans, checked = _sweep_plan(parts, parts.now())
    erased = []
    for subject_id, reason, forget in plans:
        erase_subject(parts, subject_id, actor=actor, reason=reason, forget=forget)
        erased.append(subject_id)
    # an expiry or the end of retention is no event: close here the cases nobody
    # can decide any more that no reviewer has looked at since
    closed = sweep_undecidable(parts, actor=actor)
    probes = sweep_pending_probes(parts, actor=actor)
    keys = sweep_subject_keys(parts, actor=actor)
    event = parts.audit.append(
        "retention.sweep",
        actor=actor,
        subject_ids=erased,
        checked=checked,
        erased=len(erased),
        retention_days=parts.config.retention_days,
        probes_deleted=probes,
        pending_probe_hours=parts.config.pending_probe_hours,
        identifications_closed=closed,
        data_keys_destroyed=keys,
    )
    return SweepResult(tuple(erased), event.seq, probes, closed, keys)


def sweep_subject_keys(parts: GalleryParts, *, actor: str) -> int:
    """Destroy the data keys of subjects that do not exist, made
    :data:`~.pending.UNSTORED_KEY_HOURS` ago or more (or before key times were
    kept); returns how many went, each audited as ``data-key.destroyed``.

    Only an enrolment killed after its key store committed and before its store
    did leaves one (a batch adds the subject in the same transaction). Each is
    destroyed under the store's write lock, after looking for the subject once
    more: an enrolment reads its subject's key and commits the subject under
    that lock, so a key a re-run has just used is never taken from it.
    """
    since = parts.now() - timedelta(hours=UNSTORED_KEY_HOURS)
    keystore, store = parts.keystore, parts.store
    orphans: dict[str, str | None] = {}
    after: str | None = None
    while page := keystore.made_at("", after=after, limit=SWEEP_PAGE):
        # a subject id has no ':'; the keys of kept probes and index files do
        old = {name: made for name, made in page.items() if ":" not in name
               and (made is None or datetime.fromisoformat(made) < since)}
        with store.snapshot():
            existing = {s.subject_id for s in store.get_subjects(list(old))} if old else set()
        orphans.update((name, made) for name, made in old.items() if name not in existing)
        after = next(reversed(page))  # the last name in the database's order
    destroyed = 0
    for name, made in orphans.items():
        with store.transaction():
            if store.get_subject(name) is not None or not parts.keyring.destroy_data_keys([name]):
                continue
            parts.audit.append(
                "data-key.destroyed",
                actor=actor,
                subject_ids=[name],
                reason="subject never stored; its enrolment was interrupted",
                key_made_at=made,
            )
        destroyed += 1
    if destroyed:
        keystore.reclaim()
    return destroyed


def _sweep_plan(parts: GalleryParts, now: datetime) -> tuple[list[tuple[str, str, bool]], int]:
    """What :func:`sweep_retention` erases: ``(subject_id, reason, forget)`` for each
    subject due, and how many subjects were checked. One snapshot, read a page of
    subjects at a time with a few set queries per page (at a million subjects an
    hourly sweep must not cost a query per subject)."""
    store, keystore = parts.store, parts.keystore
    plans: list[tuple[str, str, bool]] = []
    checked = 0
    with store.snapshot():
        after: str | None = None
        while page := store.page_subjects(after=after, limit=SWEEP_PAGE):
            ids = [subject.subject_id for subject in page]
            with_data = store.subjects_with_biometrics(ids)
            with_key = set(keystore.get_keys(ids))
            key_gone, anything_left = with_data - with_key, with_data | with_key  # once a page
            consents: dict[str, list[ConsentRecord]] = {}
            for consent in store.consents_of_subjects(ids):
                consents.setdefault(consent.subject_id, []).append(consent)
            for subject in page:
                of_subject = consents.get(subject.subject_id, [])
                lapsed = not any(consent_status(c, now) == "active" for c in of_subject)
                if parts.retention_until(subject) <= now:
                    plans.append((subject.subject_id, "retention period ended", True))
                elif subject.subject_id in key_gone:
                    # data whose key is destroyed: an erasure killed half-way
                    plans.append((subject.subject_id, "an interrupted erasure", False))
                elif lapsed and subject.subject_id in anything_left:
                    plans.append((subject.subject_id, "no active consent", False))
                elif lapsed and of_subject:
                    plans.append((subject.subject_id, "no active consent and nothing left", True))
            checked += len(page)
            after = ids[-1]
    return plans, checked
