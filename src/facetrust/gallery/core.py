"""The :class:`Gallery` facade: the one object the CLI and services call.

A face can only enter the gallery with consent, can only be searched for a
purpose the person agreed to, is erased for real when consent ends, and every
action leaves an entry in the keyed, hash-chained audit log.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import crypto
from ..audit import AuditLog
from ..errors import (
    ConsentError,
    IndexFileError,
    InvalidParameter,
    KeyMaterialError,
    ModelMismatch,
    PurposeRequired,
    StoreError,
    UnknownSubject,
)
from ..faces import Embedding
from ..images import ImageSource
from ..matching import OperatingPoint, get_operating_point
from ..pipeline import FacePipeline, FacePolicy
from ..store.base import (
    ConsentRecord,
    KeyStore,
    Store,
    SubjectRecord,
    TemplateRecord,
)
from ..store.postgres import PostgresStore
from . import index_file
from .backends import database_url, open_keystore, open_store
from .config import CONFIG_NAME, GalleryConfig, find_config
from .consent import consent_status
from .index import TemplateIndex
from .types import (
    Consent,
    EnrolmentResult,
    ErasureResult,
    Identification,
    KeyRotationResult,
    ReviewStatus,
    Subject,
    SubjectVerification,
    SweepResult,
    WithdrawalResult,
)
from .vectors import LiveTemplate, TemplateVectors, ciphertext_digest

#: Anything accepted as a probe or enrolment face: an image, or a template
#: already computed (an :class:`~facetrust.faces.Embedding`).
FaceInput = ImageSource | Embedding

Clock = Callable[[], datetime]

AUDIT_SECRET = "audit_key"
TEMPLATE_SECRET = "template_secret"
#: Store meta counter bumped whenever templates are erased or re-encrypted.
REMOVALS_META = "templates_removed"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Probe:
    embedding: Embedding
    sha256: str
    photo: bytes | None


class Gallery:
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
        Clock returning an aware UTC datetime; inject a fake one in tests.
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
        self._now: Clock = now or utc_now
        self._key = master_key or crypto.load_master_key(config.key_file, environ)
        self.store: Store = store or open_store(config, environ)
        self.keystore: KeyStore = keystore or open_keystore(config)
        self._pipeline = pipeline
        self._hook = _hook
        self._indexes: dict[str, TemplateIndex] = {}
        # model id -> its decrypted templates and vector index, updated by difference
        self._vectors: dict[str, TemplateVectors] = {}
        with self.store.snapshot():
            sealed_with = self.store.get_meta("master_key_id")
            self.gallery_id = self.store.get_meta("gallery_id") or ""
        if sealed_with is None:
            raise StoreError(
                f"{str(config.db_path)!r} is not an initialised gallery. Run `facetrust init`."
            )
        if sealed_with != self._key.key_id_hex:
            raise KeyMaterialError(
                f"This gallery is sealed with master key {sealed_with}, but the key from "
                f"{self._key.source} is {self._key.key_id_hex}. Use the gallery's key file or "
                f"{crypto.MASTER_KEY_ENV}; if a `facetrust keys rotate` was interrupted, run it "
                "again."
            )
        self._audit_key = self._secret(AUDIT_SECRET)
        self.audit = AuditLog(self.store, self._audit_key, self._now)

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def create(cls, config: GalleryConfig, master_key: crypto.MasterKey, **options: Any) -> Gallery:
        """Create the gallery's files and secrets, sealed with ``master_key``.

        Raises
        ------
        StoreError
            A gallery already exists at ``config.db_path``.
        """
        url = database_url(config, options.get("environ"))
        if url is None and Path(config.db_path).exists():
            raise StoreError(
                f"A gallery already exists at {str(config.db_path)!r}; open it instead."
            )
        environ = options.get("environ")
        store = options.pop("store", None) or open_store(config, environ, create=True)
        keystore = options.pop("keystore", None) or open_keystore(config, create=True)
        for path, is_file in (
            (config.db_path, url is None), (config.keystore_path, config.keystore_url is None)
        ):
            if is_file and Path(path).exists():
                os.chmod(path, 0o600)  # SQLite gives its -wal and -shm files the same mode
        with store.snapshot():
            existing = store.get_meta("master_key_id")
        if existing is not None:
            store.close()
            keystore.close()
            raise StoreError("The database already holds a gallery; open it instead.")
        now = options.get("now") or utc_now
        with store.transaction():
            store.set_meta("gallery_id", uuid.uuid4().hex)
            store.set_meta("created_at", now().isoformat())
            store.set_meta("master_key_id", master_key.key_id_hex)
            for name in (AUDIT_SECRET, TEMPLATE_SECRET):
                store.put_secret(name, master_key.wrap(crypto.generate_key(), f"secret:{name}"))
        gallery = cls(config, store=store, keystore=keystore, master_key=master_key, **options)
        gallery.audit.append(
            "gallery.create",
            actor="system",
            gallery_id=gallery.gallery_id,
            master_key_id=master_key.key_id_hex,
            purposes=list(config.purposes),
            retention_days=config.retention_days,
            review_quorum=config.review_quorum,
        )
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

        Raises
        ------
        StoreError
            ``folder`` already holds a gallery.
        """
        base = Path(folder)
        base.mkdir(parents=True, exist_ok=True)
        config_path = base / CONFIG_NAME
        config = GalleryConfig.in_folder(base, **settings)
        files = [config_path, config.key_file]
        files += [] if database_url(config) else [config.db_path]
        files += [] if config.keystore_url else [config.keystore_path]
        for existing in files:
            if existing is not None and Path(existing).exists():
                raise StoreError(
                    f"{str(existing)!r} already exists: {str(base)!r} holds a gallery. "
                    "Use it, or choose an empty folder."
                )
        key_file = config.key_file or base / "gallery.key"  # in_folder always sets one
        material = crypto.generate_key()
        crypto.write_key_file(key_file, material)
        gallery = cls.create(config, crypto.MasterKey(material, str(key_file)))
        config.save(config_path)
        return gallery, config_path

    def close(self) -> None:
        """Close the store files and drop the decrypted templates from memory."""
        self._indexes.clear()
        self._vectors.clear()
        self.store.close()
        self.keystore.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    @property
    def pipeline(self) -> FacePipeline:
        """The face pipeline (built on first use, so opening a gallery loads no model)."""
        if self._pipeline is None:
            from ..api import default_pipeline

            self._pipeline = default_pipeline()
        return self._pipeline

    def _stamp(self) -> str:
        return self._now().isoformat()

    def _secret(self, name: str) -> bytes:
        with self.store.snapshot():
            wrapped = self.store.get_secret(name)
        if wrapped is None:
            raise StoreError(f"The gallery secret {name!r} is missing: the store is damaged.")
        return self._key.unwrap(wrapped, f"secret:{name}")

    def _retention_until(self, subject: SubjectRecord) -> datetime:
        last = datetime.fromisoformat(subject.last_interaction_at)
        return last + timedelta(days=self.config.retention_days)

    def _subject_record(self, subject_id: str) -> SubjectRecord:
        record = self.store.get_subject(subject_id)
        if record is None or record.erased_at is not None:
            raise UnknownSubject(
                f"No subject {subject_id!r} in this gallery (never added, or erased). "
                "List subjects with `facetrust subject list`."
            )
        return record

    def _check_purpose(self, purpose: str | None) -> str:
        if not purpose:
            raise PurposeRequired(
                "A search or verification must state its purpose (one of: "
                + ", ".join(self.config.purposes)
                + "). Pass purpose=... (or --purpose)."
            )
        if purpose not in self.config.purposes:
            raise InvalidParameter(
                f"The purpose {purpose!r} is not one this gallery accepts. Known purposes: "
                + ", ".join(self.config.purposes)
                + "."
            )
        return purpose

    @staticmethod
    def _check_name(value: str | None, what: str) -> str:
        if not value or not value.strip():
            raise InvalidParameter(f"The '{what}' must name a person or service. Got {value!r}.")
        return value.strip()

    def _probe(self, face: FaceInput, face_policy: FacePolicy) -> _Probe:
        if isinstance(face, Embedding):
            return _Probe(face, hashlib.sha256(face.vector.tobytes()).hexdigest(), None)
        raw: bytes | None = None
        if isinstance(face, str | os.PathLike):
            raw = Path(face).read_bytes() if Path(face).is_file() else None
        elif isinstance(face, bytes | bytearray):
            raw = bytes(face)
        elif isinstance(face, np.ndarray):
            raw = np.ascontiguousarray(face).tobytes()
        embedded = self.pipeline.embed_one(
            face if raw is None or isinstance(face, np.ndarray) else raw,
            face_policy,
            check_quality=True,
        )
        digest = hashlib.sha256(raw).hexdigest() if raw is not None else ""
        photo = raw if not isinstance(face, np.ndarray) else None
        return _Probe(embedded.embedding, digest, photo)

    def _operating_point(self, model_id: str) -> OperatingPoint:
        return get_operating_point(self.config.operating_point, model_id)

    def _data_key(self, subject_id: str, *, create: bool = False) -> bytes | None:
        label = f"data-key:{subject_id}"
        wrapped = self.keystore.get_key(subject_id)
        if wrapped is None and create:
            with self.keystore.transaction():
                wrapped = self.keystore.get_key(subject_id)
                if wrapped is None:
                    wrapped = self._key.wrap(crypto.generate_key(), label)
                    self.keystore.put_key(subject_id, wrapped)
        return None if wrapped is None else self._key.unwrap(wrapped, label)

    @staticmethod
    def _template_label(template: TemplateRecord) -> str:
        return f"template:{template.template_id}:{template.subject_id}:{template.model_id}"

    def _decrypt(self, template: TemplateRecord, data_key: bytes) -> npt.NDArray[np.float32]:
        plain = crypto.open_sealed(data_key, template.ciphertext, self._template_label(template))
        return np.frombuffer(plain, dtype=np.float32).copy()

    def _put_vectors(
        self, rows: Sequence[tuple[TemplateRecord, npt.NDArray[np.float32]]]
    ) -> None:
        """With ``server_side_search``, store the protected vectors for in-database search."""
        if self.config.server_side_search:
            self._vector_store().put_vectors(
                [(t.template_id, t.subject_id, t.model_id, v) for t, v in rows]
            )

    def _vector_store(self) -> PostgresStore:
        from ..store.postgres import PostgresStore

        if not isinstance(self.store, PostgresStore):
            raise InvalidParameter(
                "The 'server_side_search' setting needs a PostgreSQL gallery (database_url); "
                "this gallery's store is a "
                + type(self.store).__name__
                + ". Turn it off, or move the gallery to PostgreSQL."
            )
        return self.store

    def _pause(self, stage: str) -> None:
        if self._hook is not None:
            self._hook(stage)

    def _index(self, model_id: str) -> TemplateIndex:
        """The search index of ``model_id``, brought up to date when the store has changed.

        The vector index is updated by difference (see :mod:`.vectors`): erased
        or re-keyed templates leave it, new ones are decrypted and added.
        Consent and retention arrays are rebuilt from the store each time.
        """
        with self.store.snapshot():
            generation = self.store.generation()
            cached = self._indexes.get(model_id)
            if cached is not None and cached.generation == generation:
                return cached
            removals = self.store.get_meta(REMOVALS_META)
            subjects = {s.subject_id: s for s in self.store.list_subjects()}
            consents = self.store.all_consents()
            templates = [
                t
                for t in self.store.all_templates()
                if t.model_id == model_id and t.subject_id in subjects
            ]
        wrapped_keys = self.keystore.all_keys()
        # a template whose subject has no data key is crypto-shredded: unreadable
        readable = {t.template_id: t for t in templates if t.subject_id in wrapped_keys}
        live = [
            LiveTemplate(t.template_id, t.subject_id, ciphertext_digest(t.ciphertext))
            for t in readable.values()
        ]
        data_keys: dict[str, bytes] = {}

        def decrypt(item: LiveTemplate) -> npt.NDArray[np.float32]:
            subject_id = item.subject_id
            if subject_id not in data_keys:
                wrapped = wrapped_keys[subject_id]
                data_keys[subject_id] = self._key.unwrap(wrapped, f"data-key:{subject_id}")
            return self._decrypt(readable[item.template_id], data_keys[subject_id])

        vectors = self._vectors.get(model_id)
        just_opened = vectors is None
        if vectors is None:
            vectors = self._vectors[model_id] = self._open_vectors(model_id, live)
        was_graph = vectors.is_approximate
        added, _ = vectors.sync(generation, live, decrypt)
        vectors.removals = removals
        if self.config.index_dir is not None and vectors.is_approximate and (
            not was_graph or (just_opened and added)
        ):
            # an index built here (minutes for an HNSW graph at 1M templates), or a
            # loaded file now behind the store: keep it for the next run
            self._save_vectors(vectors)
        retention = {s: self._retention_until(r) for s, r in subjects.items()}
        index = TemplateIndex.from_vectors(
            generation, vectors, retention, consents, self.config.purposes
        )
        self._indexes[model_id] = index
        return index

    def _open_vectors(self, model_id: str, live: Sequence[LiveTemplate]) -> TemplateVectors:
        """A new vector index for ``model_id``, from its index file when one can be trusted."""
        vectors = TemplateVectors(
            model_id, self.config.index_kind, self.config.index_exact_below
        )
        folder = self.config.index_dir
        if folder is None or not vectors.graph_possible:
            return vectors
        path = index_file.index_path(Path(folder), model_id)
        wrapped = self.keystore.get_key(index_file.key_name(model_id))
        if wrapped is None or not path.exists():
            return vectors
        name = index_file.key_name(model_id)
        try:
            sealed = index_file.read_sealed_index(
                path, self._key.unwrap(wrapped, f"data-key:{name}"), model_id
            )
        except (IndexFileError, KeyMaterialError):
            return vectors  # unreadable (e.g. written by a newer version): rebuilt
        current = {t.template_id: t.digest for t in live}
        if any(current.get(t) != digest for t, (digest, _) in sealed.slots.items()):
            # holds a template erased or re-keyed since: never use it, destroy it
            self._drop_index_files(model_id)
            return vectors
        vectors.adopt(
            sealed.index, sealed.slots, sealed.owners, sealed.next_id, sealed.generation
        )
        return vectors

    def _save_vectors(self, vectors: TemplateVectors) -> Path | None:
        """Seal ``vectors`` into its index file under a fresh key; None if it cannot be kept."""
        if self.config.index_dir is None or not vectors.is_approximate:
            return None
        model_id = vectors.model_id
        name = index_file.key_name(model_id)
        key = crypto.generate_key()
        with self.keystore.transaction():
            self.keystore.put_key(name, self._key.wrap(key, f"data-key:{name}"))
        path = index_file.index_path(Path(self.config.index_dir), model_id)
        index_file.write_sealed_index(path, key, vectors)
        with self.store.snapshot():
            removals = self.store.get_meta(REMOVALS_META)
        if removals != vectors.removals:
            # templates were erased while the file was written: it may hold them
            self._drop_index_files(model_id)
            return None
        return path

    def _drop_index_files(self, model_id: str | None = None) -> None:
        """Destroy index-file keys (crypto-shredding every copy) and delete the files."""
        names = [index_file.key_name(model_id)] if model_id is not None else [
            n for n in self.keystore.subject_ids() if n.startswith(index_file.KEY_PREFIX)
        ]
        with self.keystore.transaction():
            for name in names:
                self.keystore.delete_key(name)
        if self.config.index_dir is not None:
            folder = Path(self.config.index_dir)
            paths = (
                [index_file.index_path(folder, model_id)]
                if model_id is not None
                else list(folder.glob("*.index"))
            )
            for path in paths:
                path.unlink(missing_ok=True)

    def save_index(self) -> list[Path]:
        """Write the approximate index of every stored model to ``config.index_dir``, encrypted.

        Brings each index up to date with the store first. After an erasure an
        HNSW graph is compacted first (erased templates never reach the file),
        which at a million templates takes as long as building it: run it from
        a maintenance job (``facetrust index save``) rather than a request. The
        quantized index removes templates for real, so its save costs only the
        writing. Exact indexes are not written (rebuilding them costs only the
        decryption). Returns the files written.
        """
        written = []
        for model_id in self._stored_model_ids():
            self._index(model_id)
            path = self._save_vectors(self._vectors[model_id])
            if path is not None:
                written.append(path)
        return written

    def index_info(self) -> dict[str, dict[str, Any]]:
        """Per stored model: the kind answering searches (``exact``, ``quantized`` or
        ``hnsw``), templates held, store generation, and where the index came from
        (``new``: built in this process, ``file``: loaded). Opens each index."""
        for model_id in self._stored_model_ids():
            self._index(model_id)
        return {
            model_id: {
                "kind": v.index_kind,
                "templates": len(v.ids),
                "generation": v.generation,
                "source": v.source,
            }
            for model_id, v in self._vectors.items()
        }

    def _stored_model_ids(self) -> list[str]:
        """Models with templates in the store, and those already searched here."""
        with self.store.snapshot():
            stored = {t.model_id for t in self.store.all_templates()}
        return sorted(stored | set(self._vectors))

    # ------------------------------------------------------------------ subjects & consent
    def _subject(self, record: SubjectRecord) -> Subject:
        return Subject(
            subject_id=record.subject_id,
            display_name=record.display_name,
            created_at=record.created_at,
            last_interaction_at=record.last_interaction_at,
            retention_until=self._retention_until(record).isoformat(),
            template_count=len(self.store.templates_of(record.subject_id)),
        )

    def add_subject(
        self, subject_id: str | None = None, *, display_name: str | None = None, actor: str
    ) -> Subject:
        """Register a subject (no biometric data yet). ``subject_id`` defaults to a random id.

        Raises
        ------
        StoreError
            The id is taken (erased ids are never reused).
        """
        actor = self._check_name(actor, "actor")
        subject_id = subject_id or uuid.uuid4().hex
        if not subject_id.strip() or len(subject_id) > 200:
            raise InvalidParameter(
                f"A subject id must be 1 to 200 characters. Got {subject_id!r} instead."
            )
        if subject_id.startswith(index_file.KEY_PREFIX):
            raise InvalidParameter(
                f"Subject ids starting with {index_file.KEY_PREFIX!r} are reserved. "
                f"Got {subject_id!r}; choose another id."
            )
        stamp = self._stamp()
        record = SubjectRecord(subject_id, display_name, stamp, stamp)
        with self.store.transaction():
            self.store.insert_subject(record)
            self.store.bump_generation()
            self.audit.append("subject.add", actor=actor, subject_ids=[subject_id])
            return self._subject(record)

    def get_subject(self, subject_id: str) -> Subject:
        """The subject, or :class:`UnknownSubject` if it never existed or was erased."""
        with self.store.snapshot():
            return self._subject(self._subject_record(subject_id))

    def list_subjects(self) -> list[Subject]:
        """Every subject not erased, in the order they were added."""
        with self.store.snapshot():
            return [self._subject(r) for r in self.store.list_subjects()]

    def _consent(self, record: ConsentRecord) -> Consent:
        return Consent(
            consent_id=record.consent_id,
            subject_id=record.subject_id,
            purposes=record.purposes,
            granted_at=record.granted_at,
            expires_at=record.expires_at,
            evidence_ref=record.evidence_ref,
            evidence_sha256=record.evidence_sha256,
            notice_version=record.notice_version,
            status=consent_status(record, self._now()),
            withdrawn_at=record.withdrawn_at,
            withdrawal_reason=record.withdrawal_reason,
        )

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
        actor = self._check_name(actor, "actor")
        purposes = tuple(dict.fromkeys(purposes))
        if not purposes:
            raise InvalidParameter("A consent must name at least one purpose. Got none.")
        for purpose in purposes:
            self._check_purpose(purpose)
        now = self._now()
        if expires_at.tzinfo is None or expires_at <= now:
            raise InvalidParameter(
                "The 'expires_at' of a consent must be a timezone-aware time in the future. "
                f"Got {expires_at!r} instead."
            )
        digest = evidence_sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidParameter(
                "The 'evidence_sha256' must be the 64 hex digits of the evidence file's SHA-256. "
                f"Got {evidence_sha256!r} instead."
            )
        record = ConsentRecord(
            consent_id=uuid.uuid4().hex,
            subject_id=subject_id,
            purposes=purposes,
            granted_at=now.isoformat(),
            expires_at=expires_at.astimezone(UTC).isoformat(),
            evidence_ref=self._check_name(evidence_ref, "evidence_ref"),
            evidence_sha256=digest,
            notice_version=self._check_name(notice_version, "notice_version"),
        )
        with self.store.transaction():
            self._subject_record(subject_id)
            self.store.insert_consent(record)
            self.store.touch_subject(subject_id, now.isoformat())
            self.store.bump_generation()
            self.audit.append(
                "consent.grant",
                actor=actor,
                subject_ids=[subject_id],
                consent_id=record.consent_id,
                purposes=list(purposes),
                expires_at=record.expires_at,
                evidence_ref=record.evidence_ref,
                evidence_sha256=digest,
                notice_version=record.notice_version,
            )
        return self._consent(record)

    def consents(self, subject_id: str) -> list[Consent]:
        """The subject's consent history, oldest first (kept after erasure, without biometrics)."""
        with self.store.snapshot():
            return [self._consent(c) for c in self.store.consents_of(subject_id)]

    # ------------------------------------------------------------------ enrolment
    def enroll(
        self,
        subject_id: str,
        faces: Sequence[FaceInput],
        *,
        actor: str,
        keep_photos: bool = False,
        face_policy: FacePolicy = "single",
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
        from .enrolment import enroll_subject

        return enroll_subject(
            self, subject_id, faces, actor=actor, keep_photos=keep_photos,
            face_policy=face_policy, check_duplicates=check_duplicates, sources=sources,
        )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run many calls (e.g. bulk enrolment) as one transaction: all or nothing.

        Much faster than one transaction per call (one commit, one sync). The
        data keys commit just before the gallery data, so a crash in between
        leaves keys without data, never data without keys.
        """
        with self.store.transaction(), self.keystore.transaction():
            yield

    # ------------------------------------------------------------------ search
    def identify(
        self,
        probe: FaceInput,
        *,
        purpose: str | None,
        actor: str,
        k: int = 5,
        case_ref: str | None = None,
        face_policy: FacePolicy = "single",
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
        case_ref : str, optional
            The case or ticket the search belongs to.

        Raises
        ------
        PurposeRequired
        InvalidParameter
            Unknown purpose, empty actor, or ``k < 1``.
        """
        from .search import identify

        with self._audit_refusal("identify", actor, purpose, [], case_ref=case_ref):
            return identify(
                self,
                probe,
                purpose=purpose,
                actor=actor,
                k=k,
                case_ref=case_ref,
                face_policy=face_policy,
            )

    def review(
        self,
        identification_id: str,
        subject_id: str,
        *,
        reviewer: str,
        decision: str = "confirm",
        note: str | None = None,
    ) -> ReviewStatus:
        """Record one named reviewer's decision on one candidate of an identification.

        The candidate becomes a confirmed identification once
        ``config.review_quorum`` distinct reviewers confirm it (EU AI Act
        Art. 14(5)); one rejection rejects it. Each decision is audited.

        Parameters
        ----------
        decision : {"confirm", "reject"}
        """
        from .search import review

        return review(
            self, identification_id, subject_id, reviewer=reviewer, decision=decision, note=note
        )

    def verify_subject(
        self,
        probe: FaceInput,
        subject_id: str,
        *,
        purpose: str | None,
        actor: str,
        face_policy: FacePolicy = "single",
    ) -> SubjectVerification:
        """Compare ``probe`` with one enrolled subject (1:1), for a consented purpose.

        Raises
        ------
        PurposeRequired, UnknownSubject
        ConsentRequired, ConsentWithdrawn, ConsentExpired, PurposeNotConsented
        ModelMismatch
            The subject has no template of the probe's model.
        """
        from .search import verify_subject

        with self._audit_refusal("verify", actor, purpose, [subject_id]):
            return verify_subject(
                self, probe, subject_id, purpose=purpose, actor=actor, face_policy=face_policy
            )

    @contextmanager
    def _audit_refusal(
        self,
        kind: str,
        actor: str | None,
        purpose: str | None,
        subjects: list[str],
        **fields: Any,
    ) -> Iterator[None]:
        """Audit a search refused for consent, purpose or model reasons, then re-raise."""
        try:
            yield
        except (ConsentError, PurposeRequired, ModelMismatch, UnknownSubject) as error:
            self.audit.append(
                f"{kind}.refused",
                actor=actor or None,
                purpose=purpose or None,
                subject_ids=subjects,
                error=type(error).__name__,
                message=str(error),
                **fields,
            )
            raise

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
        history stay, so the person can consent again later).
        """
        from .erasure import withdraw_consent

        actor = self._check_name(actor, "actor")
        return withdraw_consent(self, subject_id, consent_id, actor=actor, reason=reason)

    def forget(
        self, subject_id: str, *, actor: str, reason: str = "erasure requested"
    ) -> ErasureResult:
        """Erase the subject for good: data key, templates, photos, display name.

        The id is never reused and never returned again. The consent history
        and audit log keep the opaque id only.
        """
        from .erasure import erase_subject

        actor = self._check_name(actor, "actor")
        return erase_subject(self, subject_id, actor=actor, reason=reason, forget=True)

    def sweep_retention(self, *, actor: str = "system") -> SweepResult:
        """Purge subjects past retention or without active consent, and audit it."""
        from .erasure import sweep_retention

        return sweep_retention(self, actor=self._check_name(actor, "actor"))

    # ------------------------------------------------------------------ keys
    def rotate_master_key(self, new_key: crypto.MasterKey, *, actor: str) -> KeyRotationResult:
        """Re-wrap every data key and gallery secret under ``new_key`` (no re-enrolment)."""
        from .keys import rotate_master_key

        return rotate_master_key(self, new_key, actor=self._check_name(actor, "actor"))

    def rekey_templates(self, *, actor: str) -> KeyRotationResult:
        """Renew every template under a new protection secret (no re-enrolment)."""
        from .keys import rekey_templates

        return rekey_templates(self, actor=self._check_name(actor, "actor"))
