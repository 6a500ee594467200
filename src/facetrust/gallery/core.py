"""The :class:`Gallery` facade: the one object the CLI and services call.

A face can only enter the gallery with consent, can only be searched for a
purpose the person agreed to, is erased for real when consent ends, and every
action leaves an entry in the keyed, hash-chained audit log.

The facade builds the gallery's parts (:class:`~.parts.GalleryParts`: store,
key store, :class:`~.keyring.Keyring`, audit log, :class:`~.indexes.SearchIndexes`)
and exposes the public methods; the work is done by the operation modules
(:mod:`.subjects`, :mod:`.enrolment`, :mod:`.identification`, :mod:`.erasure`,
:mod:`.keys`) over those parts, and every template comparison goes through the
one search of :mod:`.search`. Nothing below this module imports it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import crypto
from ..audit import AuditEvent, AuditLog
from ..faces import Embedding
from ..matching import OperatingPoint
from ..pipeline import DEFAULT_FACE_POLICY, FacePipeline, FacePolicy
from ..store.base import KeyStore, Store
from . import calibrations, enrolment, erasure, identification, keys, opening, subjects
from .backends import open_keystore, open_store
from .checks import check_erasure_confirmation, check_name, check_purpose
from .config import GalleryConfig, find_config
from .enrolment import EnrolledSources
from .indexes import SearchIndexes
from .keyring import AUDIT_SECRET, Keyring
from .parts import Clock, GalleryParts, utc_clock, utc_now
from .probes import FaceInput
from .refusals import audit_refusal, audit_refusal_again
from .review_methods import ReviewMethods
from .search import SearchResult, search_probe
from .state_audit import state_against_the_log
from .types import (
    Consent,
    EnrolmentResult,
    ErasureResult,
    Identification,
    KeyRotationResult,
    Subject,
    SubjectOverview,
    SubjectPage,
    SubjectVerification,
    SweepResult,
    WithdrawalResult,
)

if TYPE_CHECKING:
    from ..evaluation.calibration import CalibrationTable

__all__ = ["FaceInput", "Gallery", "utc_now"]


class Gallery(ReviewMethods):
    """A consented face gallery.

    Open one with :meth:`open` (or :meth:`create` for a new one). Not
    thread-safe: use one instance per thread or process; several processes may
    share the same files.

    Parameters
    ----------
    config : GalleryConfig
    store, keystore : optional
        Backends; SQLite files from ``config`` by default.
    master_key : MasterKey, optional
        From ``FACETRUST_MASTER_KEY`` or ``config.key_file`` by default.
    pipeline : FacePipeline, optional
        Turns images into templates (the dlib pipeline by default, built on first use).
    now : callable, optional
        Clock returning an aware datetime (read in UTC; a naive one is refused
        at its first reading); inject a fake one in tests.
    """

    def __init__(
        self,
        config: GalleryConfig,
        *,
        store: Store | None = None,
        keystore: KeyStore | None = None,
        master_key: crypto.MasterKey | None = None,
        pipeline: FacePipeline | None = None,
        now: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        _hook: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        key = master_key or crypto.load_master_key(config.key_file, environ)
        self.store: Store = store or open_store(config, environ)
        self.keystore: KeyStore = keystore or open_keystore(config)
        self._pipeline = pipeline
        self.gallery_id = opening.gallery_id_sealed_with(self.store, key, config)
        keyring = Keyring(self.store, self.keystore, key)
        clock = utc_clock(now)
        self.audit = AuditLog(
            self.store, keyring.secret(AUDIT_SECRET), clock,
            state_check=functools.partial(state_against_the_log, self.store),
        )
        self._parts = GalleryParts(
            config=config,
            gallery_id=self.gallery_id,
            store=self.store,
            keystore=self.keystore,
            keyring=keyring,
            audit=self.audit,
            indexes=SearchIndexes(config, self.store, self.keystore, keyring),
            clock=clock,
            pipeline=lambda: self.pipeline,
            hook=_hook,
        )

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def create(cls, config: GalleryConfig, master_key: crypto.MasterKey, **options: Any) -> Gallery:
        """Create the gallery's files and secrets, sealed with ``master_key``.

        Raises
        ------
        StoreError
            A gallery already exists at ``config.db_path``.
        """
        store, keystore = opening.create_stores(config, master_key, options)
        gallery = cls(config, store=store, keystore=keystore, master_key=master_key, **options)
        opening.audit_creation(gallery.audit, gallery.gallery_id, master_key, config)
        return gallery

    @classmethod
    def open(cls, config: GalleryConfig, **options: Any) -> Gallery:
        """Open an existing gallery (see the class parameters for ``options``)."""
        return cls(config, **options)

    @classmethod
    def find(cls, gallery: str | os.PathLike[str] | None = None, **options: Any) -> Gallery:
        """Open the gallery named by ``gallery`` (config file or folder), else
        ``FACETRUST_GALLERY``, else the one in the current folder."""
        return cls(GalleryConfig.load(find_config(gallery, options.get("environ"))), **options)

    @classmethod
    def init_folder(
        cls, folder: str | os.PathLike[str] = ".", **settings: Any
    ) -> tuple[Gallery, Path]:
        """Create a gallery in ``folder``: SQLite files, a 0600 key file and a config file.

        ``settings`` override :class:`GalleryConfig` fields (``purposes``,
        ``retention_days``, ...). Returns the open gallery and the config path.

        The config file is written last. An init stopped before it (a process
        killed) is finished by the same call again: the key file it wrote is
        used, and what it did not make yet is made.

        Raises
        ------
        StoreError
            ``folder`` already holds a gallery.
        """
        config, config_path, master_key, resuming = opening.prepare_folder(folder, settings)
        options: dict[str, Any] = {}
        stage = opening.interrupted_init_stage(config, master_key, options) if resuming else ""
        if stage in ("stores", "created"):
            gallery = cls(config, master_key=master_key, **options)
            if stage == "stores":
                opening.audit_creation(gallery.audit, gallery.gallery_id, master_key, config)
        else:
            gallery = cls.create(config, master_key, **options)
        config.save(config_path)
        return gallery, config_path

    def close(self) -> None:
        """Close the store files and drop the decrypted templates from memory."""
        self._parts.indexes.clear()
        self.store.close()
        self.keystore.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ shared services
    @property
    def pipeline(self) -> FacePipeline:
        """The face pipeline (built on first use, so opening a gallery loads no model)."""
        if self._pipeline is None:
            from ..api import default_pipeline

            self._pipeline = default_pipeline()
        return self._pipeline

    @property
    def parts(self) -> GalleryParts:
        """The gallery's parts (keyring, search indexes, ...), for tools and tests."""
        return self._parts

    def now(self) -> datetime:
        """The gallery's current time (timezone-aware UTC; a fake clock in tests)."""
        return self._parts.now()

    def derive_key(self, label: str) -> bytes:
        """A 32-byte key for ``label``, which only holders of the master key can compute.

        Derived (HKDF-SHA256) from the gallery's audit secret, so it stays the
        same across master-key rotations. The REST service seals its API key
        rows with one (:mod:`facetrust.service.apikeys`).
        """
        return self._parts.keyring.derived_key(label)

    def operating_point(
        self, model_id: str | None = None, name: str | None = None
    ) -> OperatingPoint:
        """The operating point ``name`` (the gallery's by default) for ``model_id`` (the
        pipeline's by default), as every search and verification of this gallery
        resolves it: the shipped table's for the models it covers, else the points
        :meth:`record_calibration` recorded here. Raises OperatingPointError."""
        return self._parts.operating_point(model_id or self.pipeline.model_id, name)

    def record_calibration(self, table: CalibrationTable, *, actor: str) -> AuditEvent:
        """Record the operating points of a calibration of the gallery's own model (a
        custom embedder's: the shipped table's models are refused) in this gallery,
        audited as ``calibration.recorded``; see :mod:`.calibrations`.

        ``table`` comes from :func:`facetrust.evaluation.run_calibration` run with
        ``pipeline=gallery.pipeline`` on labelled photos. Raises OperatingPointError
        (a shipped model) or InvalidParameter (another model, normalized distances,
        no supported target FMR).
        """
        return calibrations.record_calibration(
            self.store, self.audit, table, gallery_model_id=self.pipeline.model_id,
            actor=actor,
        )

    def check_purpose(self, purpose: str | None) -> str:
        """``purpose`` if this gallery accepts it; else PurposeRequired or InvalidParameter."""
        return check_purpose(purpose, self.config.purposes)

    @contextmanager
    def batch(self, *, audit_refusals: bool = False) -> Iterator[None]:
        """Run many calls (e.g. bulk enrolment) as one transaction: all or nothing.

        Much faster than one transaction per call (one commit, one sync). The
        data keys commit just before the gallery data, so a crash in between
        leaves keys without data, never data without keys.

        A refusal raised out of the block rolls back the audit event the
        gallery wrote for it too; with ``audit_refusals`` (for a block that is
        the outermost transaction) that event is written again after the
        rollback. Without it, the caller audits the refusal its own way (bulk
        enrolment counts them in its ``enrol.batch`` event).
        """
        try:
            with self.store.transaction():
                with self.keystore.transaction():
                    yield
                # the keys committed, the subjects not: the retention sweep destroys
                # the key of a subject left uncommitted here
                self._parts.pause("batch:keys-committed")
        except Exception as error:  # every recorded refusal, a duplicate enrolment's too
            if audit_refusals:
                audit_refusal_again(self.audit, error)
            raise

    # ------------------------------------------------------------------ subjects & consent
    def add_subject(
        self, subject_id: str | None = None, *, display_name: str | None = None, actor: str
    ) -> Subject:
        """Register a subject (no biometric data yet). ``subject_id`` defaults to a random id.

        Raises
        ------
        StoreError
            The id is taken (erased ids are never reused).
        InvalidParameter
            The id is empty, too long or reserved.
        """
        return subjects.add_subject(
            self._parts, subject_id, display_name=display_name, actor=actor
        )

    def get_subject(self, subject_id: str) -> Subject:
        """The subject, or :class:`UnknownSubject` if it never existed or was erased."""
        with self.store.snapshot():
            return subjects.to_subject(
                self._parts, subjects.subject_record(self._parts, subject_id)
            )

    def list_subjects(self) -> list[Subject]:
        """Every subject not erased, in the order they were added."""
        with self.store.snapshot():
            return [subjects.to_subject(self._parts, r) for r in self.store.list_subjects()]

    def find_subjects(
        self, query: str | None = None, *, after: str | None = None, limit: int = 50
    ) -> SubjectPage:
        """One page of the subjects not erased, by increasing id, optionally searched.

        Reads at most ``limit + 1`` subjects from the store, whatever the
        gallery's size (keyset paging: never the whole gallery in memory).

        Parameters
        ----------
        query : str, optional
            Keep subjects whose id or display name contains it, ignoring case.
        after : str, optional
            The ``next_after`` of the previous page; None for the first page.
        limit : int, default 50
            Most subjects on the page, in [1, 500].

        Raises
        ------
        InvalidParameter
            ``limit`` out of range, or a query over 200 characters.
        """
        return subjects.find_subjects(self._parts, query, after=after, limit=limit)

    def view_subject(self, subject_id: str, *, actor: str) -> SubjectOverview:
        """What the gallery holds about one subject, and audit that ``actor`` looked.

        The overview (display name, consent history, counts of templates and
        kept photos, retention date) is personal data, so each view is
        audited (kind ``"subject.view"``), and so is a refused one
        (``"subject.view.refused"``). It holds no template or photo.

        Raises
        ------
        UnknownSubject
        InvalidParameter
            ``actor`` is empty.
        """
        with audit_refusal(self._parts.audit, "subject.view", actor, None, [subject_id]):
            return subjects.view_subject(self._parts, subject_id, actor=actor)

    def grant_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        expires_at: datetime,
        evidence_ref: str,
        evidence_sha256: str,
        notice_version: str,
        actor: str,
    ) -> Consent:
        """Record a consent, effective now, for ``purposes`` until ``expires_at``.

        A refused grant (unknown subject or purpose, expiry not in the future,
        and so on) is audited as ``consent.grant.refused``.

        Parameters
        ----------
        purposes : sequence of str
            Each one of ``config.purposes``.
        expires_at : datetime
            Timezone-aware; must be in the future.
        evidence_ref, evidence_sha256 : str
            The signed form's id and the SHA-256 (64 hex digits) of its file.
        notice_version : str
            Version of the privacy notice / policy shown to the person.
        """
        with audit_refusal(self._parts.audit, "consent.grant", actor, None, [subject_id]):
            return subjects.grant_consent(
                self._parts,
                subject_id,
                purposes,
                expires_at=expires_at,
                evidence_ref=evidence_ref,
                evidence_sha256=evidence_sha256,
                notice_version=notice_version,
                actor=actor,
            )

    def consents(self, subject_id: str) -> list[Consent]:
        """The subject's consent history, oldest first (kept after erasure, without biometrics)."""
        now = self.now()
        with self.store.snapshot():
            return [subjects.to_consent(c, now) for c in self.store.consents_of(subject_id)]

    def require_consent(
        self, subject_id: str, purpose: str | None, *, within_retention: bool = False
    ) -> None:
        """Raise unless ``subject_id`` exists and an active consent covers ``purpose``.

        ``purpose`` None accepts a consent to any purpose. With
        ``within_retention``, a subject past retention is refused too.

        Raises
        ------
        UnknownSubject
        ConsentRequired, ConsentWithdrawn, ConsentExpired, PurposeNotConsented
        """
        with self.store.snapshot():
            subjects.require_active_consent(
                self._parts, subject_id, purpose, within_retention=within_retention
            )

    # ------------------------------------------------------------------ enrolment
    def enroll(
        self,
        subject_id: str,
        faces: Sequence[FaceInput],
        *,
        actor: str,
        keep_photos: bool = False,
        face_policy: FacePolicy = DEFAULT_FACE_POLICY,
        check_duplicates: bool = True,
        sources: Sequence[bytes | None] | None = None,
    ) -> EnrolmentResult:
        """Store templates of ``subject_id`` from one or more photos (or templates).

        Every face must pass the quality minimums. The source photos are kept
        (encrypted) only when ``keep_photos`` is true. ``check_duplicates=False``
        skips the search for other subjects with the same face (for bulk
        imports of galleries already de-duplicated). ``sources`` gives the
        photo bytes behind each face when ``faces`` are templates: a keyed
        digest of each is kept with its template (photos given as files or
        bytes are used directly), so a re-run batch enrolment skips them.

        Raises
        ------
        UnknownSubject
        ConsentRequired, ConsentWithdrawn, ConsentExpired
            The subject has no active consent.
        FaceQualityTooLow, NoFaceFound, MultipleFaces
        DuplicateEnrolment
            A face matches another subject and ``config.duplicate_policy`` is "refuse".
        """
        with audit_refusal(self._parts.audit, "enrol", actor, None, [subject_id]):
            return enrolment.enroll_subject(
                self._parts, subject_id, faces, actor=actor, keep_photos=keep_photos,
                face_policy=face_policy, check_duplicates=check_duplicates, sources=sources,
            )

    def enrolled_sources(self, subject_id: str) -> EnrolledSources:
        """What recognises the photos already enrolled for ``subject_id`` (resumable batches)."""
        return enrolment.enrolled_sources(self._parts, subject_id)

    def seal_for_subject(self, subject_id: str, data: bytes, label: str) -> bytes | None:
        """``data`` sealed under the subject's data key (erased with the subject).

        Returns None when the subject has no data key (never enrolled, or erased).
        ``label`` binds the ciphertext to what it is (e.g. ``"probe-crop:<id>"``).
        """
        data_key = self._parts.keyring.data_key(subject_id)
        return None if data_key is None else crypto.seal(data_key, data, label)

    # ------------------------------------------------------------------ search
    def search(
        self,
        probe: Embedding,
        *,
        purpose: str | None,
        k: int = 5,
        operating_point: str | None = None,
        only: Collection[str] | None = None,
        exclude: str | None = None,
    ) -> SearchResult:
        """The eligible subjects nearest to a template, without auditing (see below).

        The one template search that identification, verification, the
        enrolment duplicate check and the gate use (:mod:`.search`): subjects
        not erased, within retention, whose active consent covers ``purpose``
        (any purpose if None), among ``only`` and not ``exclude`` when given,
        within the threshold of ``operating_point`` (the gallery's by default).
        Without ``only``, subjects enrolled for one event only are left out: only
        their event's gate, which names its members in ``only``, searches them.
        The caller audits the use it makes of the result (the gate records a
        decision; :meth:`identify` records the search).

        Returns
        -------
        SearchResult
            ``hits`` (subject and distance, lower is more similar, increasing),
            ``searched`` (eligible subjects) and the store ``generation``.
        """
        point = self._parts.operating_point(probe.model_id, operating_point)
        return search_probe(
            self._parts, probe.vector, probe.model_id, purpose=purpose, point=point, k=k,
            only=only, exclude=exclude,
        )

    def identify(
        self,
        probe: FaceInput,
        *,
        purpose: str | None,
        actor: str,
        case_ref: str | None,
        k: int = 5,
        face_policy: FacePolicy = DEFAULT_FACE_POLICY,
    ) -> Identification:
        """Search the gallery (1:N) for the face in ``probe``, for one consented purpose.

        Only subjects whose active, unexpired consent covers ``purpose`` and
        who are within retention are searched, and only their templates of the
        probe's model. The result is a ranked candidate list for human review,
        never an identification by itself. The probe and its template are not
        stored; its SHA-256 is audited.

        Parameters
        ----------
        probe : image source or Embedding
        purpose : str
            Required; one of ``config.purposes``.
        actor : str
            Who runs the search.
        k : int
            Most candidates to return.
        case_ref : str
            Required: the case, ticket or gate the search belongs to (audited,
            so an auditor can ask why it was run).

        Raises
        ------
        PurposeRequired
        InvalidParameter
            Unknown purpose, empty actor, no ``case_ref``, or ``k < 1``.
        """
        with audit_refusal(self._parts.audit, "identify", actor, purpose, [], case_ref=case_ref):
            return identification.identify(
                self._parts,
                probe,
                purpose=purpose,
                actor=actor,
                k=k,
                case_ref=case_ref,
                face_policy=face_policy,
            )

    def verify_subject(
        self,
        probe: FaceInput,
        subject_id: str,
        *,
        purpose: str | None,
        actor: str,
        case_ref: str | None,
        face_policy: FacePolicy = DEFAULT_FACE_POLICY,
    ) -> SubjectVerification:
        """Compare ``probe`` with one enrolled subject (1:1), for a consented purpose.

        ``case_ref`` (required) names the case or ticket the check belongs to (audited).

        Raises
        ------
        PurposeRequired, UnknownSubject
        InvalidParameter
            Unknown purpose, empty actor or no ``case_ref``.
        ConsentRequired, ConsentWithdrawn, ConsentExpired, PurposeNotConsented
        EventOnlySubject
            The subject was enrolled for one event only (``facetrust event enroll``):
            their consent covers that event alone, so only its gate matches them.
        ModelMismatch
            The subject has no template of the probe's model.

        A refusal is audited as ``verify.refused``.
        """
        with audit_refusal(
            self._parts.audit, "verify", actor, purpose, [subject_id], case_ref=case_ref
        ):
            return identification.verify_subject(
                self._parts, probe, subject_id, purpose=purpose, actor=actor,
                case_ref=case_ref, face_policy=face_policy,
            )

    # ------------------------------------------------------------------ erasure & retention
    def withdraw_consent(
        self,
        subject_id: str,
        consent_id: str | None = None,
        *,
        actor: str,
        reason: str = "withdrawn by the subject",
    ) -> WithdrawalResult:
        """Withdraw one consent (all active ones if ``consent_id`` is None).

        When no active consent remains, the subject's templates and photos are
        deleted and its data key destroyed (the subject record and consent
        history stay, so the person can consent again later). A refused
        withdrawal is audited as ``consent.withdraw.refused``.
        """
        with audit_refusal(self._parts.audit, "consent.withdraw", actor, None, [subject_id],
                           consent_id=consent_id):
            return erasure.withdraw_consent(
                self._parts, subject_id, consent_id, actor=actor, reason=reason
            )

    def forget(
        self,
        subject_id: str,
        *,
        actor: str,
        reason: str = "erasure requested",
        confirm_id: str | None = None,
    ) -> ErasureResult:
        """Erase the subject for good: data key, templates, photos, display name.

        The id is never reused and never returned again. The consent history
        and audit log keep the opaque id only. ``confirm_id`` is the id a
        person typed to confirm (the console asks for it): when given, it must
        equal ``subject_id`` or nothing is erased.

        Raises
        ------
        UnknownSubject
        InvalidParameter
            ``confirm_id`` is given and is not ``subject_id``.

        A refused erasure is audited as ``erase.refused``.
        """
        with audit_refusal(self._parts.audit, "erase", actor, None, [subject_id]):
            check_erasure_confirmation(subject_id, confirm_id)
            return erasure.erase_subject(
                self._parts, subject_id, actor=actor, reason=reason, forget=True
            )

    def sweep_retention(self, *, actor: str = "system") -> SweepResult:
        """Purge subjects past retention or without active consent, and probes kept
        past ``config.pending_probe_hours``; close the identifications nobody can
        decide any more (their probes go at once); audit it."""
        return erasure.sweep_retention(self._parts, actor=actor)

    # ------------------------------------------------------------------ keys & indexes
    def rotate_master_key(self, new_key: crypto.MasterKey, *, actor: str) -> KeyRotationResult:
        """Re-wrap every data key and gallery secret under ``new_key`` (no re-enrolment)."""
        return keys.rotate_master_key(self._parts, new_key, actor=actor)

    def rekey_templates(self, *, actor: str) -> KeyRotationResult:
        """Renew every template under a new protection secret (no re-enrolment)."""
        return keys.rekey_templates(self._parts, actor=actor)

    def save_index(self, *, actor: str = "system") -> list[Path]:
        """Write the approximate index of every stored model to ``config.index_dir``, encrypted.

        Brings each index up to date with the store first. After an erasure an
        HNSW graph is compacted first (erased templates never reach the file),
        which at a million templates takes as long as building it: run it from
        a maintenance job (``facetrust index save``) rather than a request. The
        quantized index removes templates for real, so its save costs only the
        writing. Exact indexes are not written (rebuilding them costs only the
        decryption). Returns the files written. Audited (``index.save``, with
        ``actor``): bringing the indexes up to date decrypts every template.
        """
        actor = check_name(actor, "actor")
        written = self._parts.indexes.save()
        self.audit.append("index.save", actor=actor, files=[path.name for path in written])
        return written

    def index_info(self) -> dict[str, dict[str, Any]]:
        """Per stored model: the kind answering searches (``exact``, ``quantized`` or
        ``hnsw``), templates held, store generation, and where the index came from
        (``new``: built in this process, ``file``: loaded). Opens each index."""
        return self._parts.indexes.info()

