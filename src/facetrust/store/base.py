"""The storage interfaces of a gallery, and the plain records they exchange.

Two stores hold a gallery:

* :class:`Store` holds subjects, consents, encrypted templates and photos,
  identifications and their reviews, wrapped gallery secrets and the audit log.
* :class:`KeyStore` holds each subject's data key, wrapped by the master key.
  It is a separate store on purpose: a backup of the gallery then never holds
  the keys of its ciphertext, so destroying a subject's key (crypto-shredding)
  makes every copy of that subject's templates unreadable, backups included.

The interfaces are SQL-neutral: methods and frozen records, no SQL. Every
method that writes must be called inside ``with store.transaction():``, which
is one atomic unit of work that also serialises writers; reads that must agree
with each other go inside ``with store.snapshot():``. A write that breaks a rule (a missing
referenced record, a duplicate key) raises :class:`~facetrust.errors.StoreError`,
whatever the backend. The conformance suite in
``tests/store`` runs against every implementation.

Change tracking: the store's generation counter moves with every change to
subjects, consents or templates, and each changed row is stamped, in the
writing transaction, with the generation that transaction brings the store to
(writers are serialised, so stamps grow in commit order). A reader that read
generation ``G`` asks :meth:`Store.changes_since` for what changed after it:
the cost follows the size of the change, not of the gallery. Deleted
templates leave a tombstone (their id and the generation, nothing else) for a
bounded number of deletions; a reader further behind gets None and reloads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SubjectRecord:
    """A subject: an opaque id, an optional display name, and its life-cycle times.

    Times are timezone-aware UTC ``datetime`` ISO strings (``isoformat()``).
    ``erased_at`` is set once the subject was erased; an erased id is never reused.
    """

    subject_id: str
    display_name: str | None
    created_at: str
    last_interaction_at: str
    erased_at: str | None = None


@dataclass(frozen=True)
class ConsentRecord:
    """One consent as given: purposes, validity, evidence and notice version."""

    consent_id: str
    subject_id: str
    purposes: tuple[str, ...]
    granted_at: str
    expires_at: str
    evidence_ref: str
    evidence_sha256: str
    notice_version: str
    withdrawn_at: str | None = None
    withdrawal_reason: str | None = None


@dataclass(frozen=True)
class TemplateRecord:
    """An encrypted, protected template (ciphertext of the rotated float32 vector).

    ``source_digest`` is a keyed digest (HMAC-SHA256 under the subject's data
    key) of the photo the template came from, or None: it lets a re-run batch
    enrolment skip photos already enrolled, and becomes unlinkable to any photo
    once the subject's key is destroyed.
    """

    template_id: str
    subject_id: str
    model_id: str
    ciphertext: bytes
    created_at: str
    source_digest: str | None = None


@dataclass(frozen=True)
class PhotoRecord:
    """An encrypted source photo, kept only when the enrolment opted in."""

    photo_id: str
    subject_id: str
    ciphertext: bytes
    created_at: str


@dataclass(frozen=True)
class IdentificationRecord:
    """A 1:N search as audited: never the probe, only its hash and the candidates.

    ``candidates`` is a tuple of ``(subject_id, distance, rank)``.
    ``review_quorum`` is the number of distinct confirmations that decide a
    candidate, as it was when the search was made (a later change of the
    gallery's quorum applies to later searches only); None only for a search
    made before facetrust recorded it whose ``identify`` audit event carries none.
    """

    identification_id: str
    purpose: str
    actor: str
    case_ref: str | None
    probe_sha256: str
    model_id: str
    operating_point: str
    threshold: float
    started_at: str
    ended_at: str
    candidates: tuple[tuple[str, float, int], ...]
    review_quorum: int | None = None


@dataclass(frozen=True)
class ReviewRecord:
    """One named reviewer's decision on one candidate of an identification."""

    identification_id: str
    subject_id: str
    reviewer: str
    decision: str
    decided_at: str
    note: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One event of the audit log as stored: body JSON plus chain links."""

    seq: int
    recorded_at: str
    kind: str
    actor: str | None
    purpose: str | None
    subject_ids: tuple[str, ...]
    body: str
    prev_mac: str
    mac: str


@dataclass(frozen=True)
class EventRecord:
    """A time-boxed event (a flight, an exam) with its own gallery of members."""

    event_id: str
    purpose: str
    valid_from: str
    valid_to: str
    operating_point: str | None
    created_at: str
    created_by: str
    closed_at: str | None = None


@dataclass(frozen=True)
class EventMemberRecord:
    """A subject in an event's gallery; ``event_only`` ones are erased when it closes."""

    event_id: str
    subject_id: str
    event_only: bool
    added_at: str


@dataclass(frozen=True)
class OptOutRecord:
    """A person who opted out of an event: a reference (booking, seat), never a face."""

    event_id: str
    reference: str
    subject_id: str | None
    opted_out_at: str


@dataclass(frozen=True)
class ProbeCropRecord:
    """An encrypted face crop of a matched gate probe, deleted at ``delete_after``."""

    crop_id: str
    event_id: str
    subject_id: str
    ciphertext: bytes
    created_at: str
    delete_after: str


@dataclass(frozen=True)
class PendingProbeRecord:
    """The sealed probe of an identification awaiting review, deleted at ``delete_after``
    at the latest (sooner when the identification is decided)."""

    identification_id: str
    ciphertext: bytes
    created_at: str
    delete_after: str


@dataclass(frozen=True)
class StoreChanges:
    """What changed in a store after a given generation (see :meth:`Store.changes_since`).

    Apply ``removed_templates`` before ``templates``; applying the same
    changes twice gives the same result (a reader may see a change again).
    """

    #: The store generation these changes bring the reader to.
    generation: int
    #: Templates inserted or re-encrypted since (every model), oldest change first.
    templates: list[TemplateRecord]
    #: Ids of templates deleted since (a template may also be deleted after being inserted).
    removed_templates: list[str]
    #: Subjects whose record (interaction time, erasure mark) or consents changed since.
    subject_ids: list[str]


@dataclass(frozen=True)
class EligibilityColumns:
    """What decides who may be searched, read in bulk as columns (see
    :meth:`Store.eligibility_columns`): no record object per row, for the cold
    start of a large gallery. Times are UTC ISO strings as stored.
    """

    #: Subjects not erased ...
    subject_ids: list[str]
    #: ... and the last interaction time of each (retention counts from it).
    last_interaction_at: list[str]
    #: Consents not withdrawn: the subject of each ...
    consent_subject_ids: list[str]
    #: ... its purposes ...
    consent_purposes: list[tuple[str, ...]]
    #: ... and its expiry.
    consent_expires_at: list[str]


@dataclass(frozen=True)
class IdempotencyRecord:
    """The stored response to a request sent with an ``Idempotency-Key``.

    ``principal`` is who sent it (an API key id) and ``key`` the header's
    value; ``request_sha256`` fingerprints what was asked (route, path, body),
    so a reused key with another request is told apart. ``response`` is the
    JSON body answered with ``status``. ``subject_id`` names the subject the
    response is about: erasing it deletes the record, as does deleting its
    biometric data when ``biometric`` (an enrolment's face). Times are UTC ISO
    strings; the record is purged once ``expires_at`` passed.
    """

    principal: str
    key: str
    request_sha256: str
    status: int
    response: str
    subject_id: str | None
    biometric: bool
    created_at: str
    expires_at: str


@dataclass(frozen=True)
class QueuedPhoto:
    """One photo of a batch enrolment queue shared by workers (``enroll-batch --queue``).

    ``photo`` is its path relative to the batch folder (the same on every
    host). ``state`` is ``waiting``, ``claimed`` (by ``worker`` until
    ``lease_until``, after which another worker may claim it), ``done`` or
    ``failed`` (with ``reason``, one of the batch failure reasons, and a
    plain-English ``message``). ``attempts`` counts its claims. Times are UTC
    ISO strings.
    """

    queue: str
    photo: str
    subject_id: str | None
    state: str
    worker: str | None = None
    lease_until: str | None = None
    attempts: int = 0
    reason: str | None = None
    message: str | None = None
    updated_at: str = ""


@dataclass(frozen=True)
class AuditHead:
    """The keyed checkpoint of the newest event: catches truncation of the log."""

    seq: int
    mac: str
    head_mac: str


class Store(Protocol):
    """Subjects, consents, templates, reviews, secrets and the audit log of one gallery."""

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic write unit; serialises writers; rolls back on any exception."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """A consistent read view (no-op inside a transaction)."""
        ...

    def close(self) -> None: ...

    def in_transaction(self) -> bool:
        """Whether a write transaction is open here: reads then see its uncommitted changes."""
        ...

    # gallery-wide values ---------------------------------------------------
    def get_meta(self, name: str) -> str | None: ...
    def set_meta(self, name: str, value: str) -> None: ...
    def get_secret(self, name: str) -> bytes | None: ...
    def put_secret(self, name: str, wrapped: bytes) -> None: ...
    def generation(self) -> int:
        """A counter that grows with every change to subjects, consents, templates or
        the members of events."""
        ...

    def bump_generation(self) -> None:
        """Move the generation past every value read so far (inside a transaction).

        Writes to subjects, consents, templates and event members move it themselves; a call
        after such a write, with no generation read in between, changes nothing.
        """
        ...

    def changes_since(self, generation: int) -> StoreChanges | None:
        """The changes committed after ``generation``, or None when they are not known.

        None means the change log no longer reaches back to ``generation``
        (old tombstones were pruned, the store was upgraded since) or that
        ``generation`` is ahead of the store: reload everything instead. Reads
        in one snapshot; the cost follows the number of changes.
        """
        ...

    # subjects and consents -------------------------------------------------
    def insert_subject(self, subject: SubjectRecord) -> None: ...
    def get_subject(self, subject_id: str) -> SubjectRecord | None: ...
    def get_subjects(self, subject_ids: Sequence[str]) -> list[SubjectRecord]:
        """The records of those of ``subject_ids`` that exist (erased ones included)."""
        ...

    def list_subjects(self, include_erased: bool = False) -> list[SubjectRecord]: ...
    def page_subjects(
        self, *, after: str | None = None, limit: int = 50, contains: str | None = None
    ) -> list[SubjectRecord]:
        """Up to ``limit`` subjects not erased, by increasing id, with ids after ``after``.

        ``contains`` keeps those whose id or display name contains it, ignoring
        case (ASCII case on SQLite). Keyset paging: pass the last id of a page
        as ``after`` to get the next one; the store never reads a whole gallery.
        """
        ...

    def touch_subject(self, subject_id: str, at: str) -> None:
        """Set the subject's last interaction time."""
        ...

    def mark_subject_erased(self, subject_id: str, at: str) -> None:
        """Set ``erased_at`` and forget the display name."""
        ...

    def remove_display_name(self, subject_id: str) -> None:
        """Forget the subject's display name (its biometric data was erased)."""
        ...

    def insert_consent(self, consent: ConsentRecord) -> None: ...
    def consents_of(self, subject_id: str) -> list[ConsentRecord]:
        """The subject's consents, oldest first, withdrawn ones included."""
        ...

    def all_consents(self) -> list[ConsentRecord]: ...
    def eligibility_columns(self) -> EligibilityColumns:
        """Every subject not erased with its last interaction time, and every consent
        not withdrawn with its subject, purposes and expiry, as columns (two reads;
        call inside :meth:`snapshot` to read them at one generation)."""
        ...

    def consents_of_subjects(self, subject_ids: Sequence[str]) -> list[ConsentRecord]:
        """Every consent of any of ``subject_ids``, withdrawn ones included."""
        ...

    def withdraw_consent(self, consent_id: str, at: str, reason: str) -> None: ...

    # biometric data ----------------------------------------------------------
    def insert_template(self, template: TemplateRecord) -> None: ...
    def templates_of(self, subject_id: str) -> list[TemplateRecord]: ...
    def all_templates(self) -> list[TemplateRecord]: ...
    def template_model_ids(self) -> list[str]:
        """The models that have templates, sorted (reads no ciphertext)."""
        ...

    def template_ids_through(self, model_id: str, generation: int) -> list[str]:
        """The ids of the templates of ``model_id`` last inserted or re-encrypted at or
        before ``generation`` (reads no ciphertext): with :meth:`changes_since`, what
        a reader that read the store at ``generation`` held and still holds."""
        ...

    def replace_template_ciphertext(self, template_id: str, ciphertext: bytes) -> None: ...
    def insert_photo(self, photo: PhotoRecord) -> None: ...
    def photos_of(self, subject_id: str) -> list[PhotoRecord]: ...
    def subjects_with_biometrics(self, subject_ids: Sequence[str]) -> set[str]:
        """Those of ``subject_ids`` with a template or a photo (reads no ciphertext)."""
        ...

    def delete_biometrics(self, subject_id: str) -> int:
        """Delete every template and photo of the subject; returns how many rows went."""
        ...

    def reclaim(self) -> None:
        """Make deleted bytes unrecoverable from the store's files (after a commit)."""
        ...

    # identifications -------------------------------------------------------
    def insert_identification(self, identification: IdentificationRecord) -> None: ...
    def get_identification(self, identification_id: str) -> IdentificationRecord | None: ...
    def insert_review(self, review: ReviewRecord) -> None: ...
    def reviews_of(self, identification_id: str) -> list[ReviewRecord]: ...
    def page_reviews(
        self, after: tuple[str, str, str] | None = None, limit: int = 1000
    ) -> list[ReviewRecord]:
        """Up to ``limit`` reviews of any identification, by (identification, subject,
        reviewer), after that key (keyset paging; the last review's three ids)."""
        ...

    def mark_identification_decided(self, identification_id: str, at: str) -> None: ...
    def undecided_identifications(
        self, after: tuple[str, str] | None = None, limit: int = 100,
        naming: str | None = None,
    ) -> list[IdentificationRecord]:
        """Identifications not yet decided, oldest first, after ``(started_at, id)``;
        with ``naming`` (a subject id, of the id grammar), only those that returned
        that subject as a candidate."""
        ...

    def identification_decided_at(self, identification_id: str) -> str | None: ...
    def close_identification(
        self, identification_id: str, at: str, ineligible: Mapping[str, str]
    ) -> bool:
        """Mark an undecided identification decided at ``at``, closed because its
        candidates in ``ineligible`` (subject id -> reason) can no longer be
        confirmed; False (and nothing changed) if it was already decided."""
        ...

    def identification_closure(self, identification_id: str) -> dict[str, str] | None:
        """The ``ineligible`` of :meth:`close_identification` for a closed
        identification; None for one decided by its reviews, or not decided."""
        ...

    def insert_pending_probe(self, probe: PendingProbeRecord) -> None: ...
    def get_pending_probe(self, identification_id: str) -> PendingProbeRecord | None: ...
    def pending_probes_due(self, now: str) -> list[str]:
        """The identification ids whose kept probe is due for deletion at ``now``."""
        ...

    def pending_probe_ids(self) -> list[str]:
        """The identification ids of every kept probe (sorted)."""
        ...

    def delete_pending_probe(self, identification_id: str) -> bool: ...

    # events (gate galleries) ---------------------------------------------
    def insert_event(self, event: EventRecord) -> None: ...
    def get_event(self, event_id: str) -> EventRecord | None: ...
    def list_events(self) -> list[EventRecord]: ...
    def close_event(self, event_id: str, at: str) -> None: ...
    def put_event_member(self, member: EventMemberRecord) -> None: ...
    def remove_event_member(self, event_id: str, subject_id: str) -> bool: ...
    def event_members(self, event_id: str) -> list[EventMemberRecord]: ...
    def insert_opt_out(self, opt_out: OptOutRecord) -> None: ...
    def opt_outs(self, event_id: str) -> list[OptOutRecord]: ...
    def insert_probe_crop(self, crop: ProbeCropRecord) -> None: ...
    def probe_crops(self, event_id: str | None = None) -> list[ProbeCropRecord]: ...
    def delete_probe_crops(self, crop_ids: list[str]) -> int: ...

    # audit log -------------------------------------------------------------
    def append_audit(self, record: AuditRecord) -> None: ...
    def last_audit(self) -> AuditRecord | None: ...
    def audit_records(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Events in storage order (by ``seq``) after ``after_seq``."""
        ...

    def get_audit_head(self) -> AuditHead | None: ...
    def set_audit_head(self, head: AuditHead) -> None: ...

    # batch enrolment queue (enroll-batch --queue) --------------------------------
    def queue_photos(self, photos: Sequence[QueuedPhoto]) -> int:
        """Add the photos a queue does not hold yet (rows it holds are kept as they are).

        Returns how many were added. Inside a transaction.
        """
        ...

    def claim_queued(
        self, queue: str, worker: str, *, now: str, lease_until: str, limit: int,
        max_attempts: int,
    ) -> list[QueuedPhoto]:
        """Claim up to ``limit`` photos for ``worker`` until ``lease_until`` (inside a transaction).

        Claimable: ``waiting`` ones, and ``claimed`` ones whose lease ended
        before ``now`` (their worker stopped) that were claimed fewer than
        ``max_attempts`` times; those claimed that often are marked ``failed``
        with the reason ``abandoned`` instead. Claims go in subject then photo
        order; on PostgreSQL rows another transaction holds are skipped
        (``FOR UPDATE SKIP LOCKED``), never waited for.
        """
        ...

    def finish_queued(
        self, queue: str, photos: Sequence[str], *, state: str, at: str,
        reason: str | None = None, message: str | None = None,
    ) -> int:
        """Mark ``photos`` ``done`` or ``failed`` (those not done already); how many changed."""
        ...

    def queued(self, queue: str, state: str | None = None) -> list[QueuedPhoto]:
        """The queue's photos (of one ``state`` if given), in subject then photo order."""
        ...

    def queue_names(self) -> list[str]:
        """The names of every batch enrolment queue, sorted."""
        ...

    def requeue_failed(
        self, queue: str, subjects: Mapping[str, str], *, reason: str, at: str
    ) -> int:
        """Put back as ``waiting`` (no attempts yet) the photos of ``subjects`` (photo ->
        subject id) that are ``failed`` with ``reason``, naming the subject given; how many.

        Inside a transaction.
        """
        ...

    def drop_failed(self, queue: str, photos: Sequence[str], *, reason: str) -> int:
        """Delete the rows of ``photos`` in ``queue`` that are ``failed`` with ``reason``;
        how many. Inside a transaction."""
        ...

    def release_claims(self, queue: str, worker: str, *, at: str) -> int:
        """Put back as ``waiting`` the photos ``worker`` holds ``claimed`` in ``queue``, their
        claim not counted as an attempt (the worker was stopped, not failed by them); how
        many. Inside a transaction.
        """
        ...

    def forget_queued(self, subject_id: str) -> int:
        """Delete the queue rows of ``subject_id`` in every queue (their photo paths may
        name the person); how many. Every erasure calls it."""
        ...

    # stored responses of keyed requests (Idempotency-Key) ----------------------
    def get_idempotency(self, principal: str, key: str) -> IdempotencyRecord | None:
        """The stored response to ``principal``'s request with ``key``, expired or not."""
        ...

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        """Store a response; StoreError if ``(principal, key)`` is already stored."""
        ...

    def purge_idempotency(self, now: str) -> int:
        """Delete the records whose ``expires_at`` is at or before ``now``; how many went."""
        ...

    def forget_idempotency(self, subject_id: str, *, biometric_only: bool = False) -> int:
        """Delete the records about ``subject_id`` (only ``biometric`` ones if asked).

        :meth:`mark_subject_erased` and :meth:`remove_display_name` delete every
        record about the subject, :meth:`delete_biometrics` the biometric ones.
        """
        ...


class KeyStore(Protocol):
    """Wrapped per-subject data keys, kept apart from the gallery's data."""

    def transaction(self) -> AbstractContextManager[None]: ...
    def close(self) -> None: ...
    def get_key(self, subject_id: str) -> bytes | None: ...
    def get_keys(self, subject_ids: Sequence[str]) -> dict[str, bytes]:
        """The wrapped keys of those of ``subject_ids`` that have one."""
        ...

    def put_key(self, subject_id: str, wrapped: bytes) -> None:
        """Insert or replace the subject's wrapped data key."""
        ...

    def add_key(self, subject_id: str, wrapped: bytes, *, created_at: str) -> None:
        """Store a wrapped key under a name never used before, committed on return,
        with the time it was made (ISO 8601, see :meth:`made_at`).

        One statement, without a transaction of its own (it joins one that is
        open). Cheaper than :meth:`put_key` in a transaction for a key made for
        a fresh random name, such as a kept probe's.

        Raises
        ------
        StoreError
            A key is already stored under ``subject_id``.
        """
        ...

    def delete_key(self, subject_id: str) -> bool:
        """Destroy the subject's data key; ``True`` if there was one."""
        ...

    def subject_ids(self) -> list[str]: ...
    def names_starting(self, prefix: str) -> list[str]:
        """The names of the keys whose name starts with ``prefix`` (filtered in the
        database: the key store holds one key per subject)."""
        ...

    def made_at(
        self, prefix: str, *, after: str | None = None, limit: int | None = None
    ) -> dict[str, str | None]:
        """When each key whose name starts with ``prefix`` was made (ISO 8601, as given
        to :meth:`add_key`; None for a key made otherwise, of unknown age).

        With ``limit``, one page in name order: at most ``limit`` keys, those whose
        name sorts after ``after`` (from the first when None)."""
        ...

    def all_keys(self) -> dict[str, bytes]:
        """Every wrapped key by subject id (for bulk loading and key rotation)."""
        ...

    def reclaim(self) -> None: ...
