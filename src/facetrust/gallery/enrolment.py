"""Enrolment: consent and quality checks, duplicate search, encryption, one transaction.

The templates, photos, last-interaction time and audit event of one enrolment
are written in one transaction: a process killed half-way leaves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .. import crypto
from ..errors import (
    DuplicateEnrolment,
    InvalidParameter,
    ModelMismatch,
    StoreError,
)
from ..matching import OperatingPoint
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy
from ..store.base import PhotoRecord, TemplateRecord
from .checks import check_name
from .parts import GalleryParts
from .probes import FaceInput
from .refusals import record_refusal
from .search import put_server_side_vectors, search_templates
from .subjects import require_active_consent
from .types import DuplicateMatch, EnrolmentResult


def enroll_subject(
    parts: GalleryParts,
    subject_id: str,
    faces: Sequence[FaceInput],
    *,
    actor: str,
    keep_photos: bool = False,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
    check_duplicates: bool = True,
    sources: Sequence[bytes | None] | None = None,
) -> EnrolmentResult:
    """See :meth:`Gallery.enroll`."""
    actor = check_name(actor, "actor")
    if not faces:
        raise InvalidParameter("Enrolment needs at least one photo or template. Got none.")
    if sources is not None and len(sources) != len(faces):
        raise InvalidParameter(
            f"The 'sources' must give one photo (or None) per face: {len(faces)} faces, "
            f"got {len(sources)} sources."
        )
    require_enrollable(parts, subject_id)
    probes = [parts.read_probe(face, face_policy) for face in faces]
    models = {p.embedding.model_id for p in probes}
    if len(models) > 1:
        raise ModelMismatch(
            f"All templates of one enrolment must come from one model. Got {sorted(models)}."
        )
    model_id = models.pop()
    if keep_photos and any(p.photo is None for p in probes):
        raise InvalidParameter(
            "keep_photos=True needs photos given as files or encoded bytes; got a template "
            "or a pixel array. Pass the photo files, or enrol without keeping photos."
        )
    secret = parts.keyring.template_secret()
    point = parts.operating_point(model_id)
    protected = [crypto.protect(p.embedding.vector, secret) for p in probes]
    duplicates = (
        find_duplicates(parts, protected, model_id, point, secret, subject_id)
        if check_duplicates
        else []
    )
    if duplicates and parts.config.duplicate_policy == "refuse":
        refusal = DuplicateEnrolment(
            "The face matches already enrolled subject(s) "
            + ", ".join(f"{d.subject_id!r} (distance {d.distance:.3f})" for d in duplicates)
            + f" within threshold {point.threshold}. Check the identity, or use policy 'warn'."
        )
        record_refusal(parts.audit, "enrol", refusal, actor=actor, purpose=None,
                       subjects=[subject_id], reason="duplicate",
                       duplicates=[d.to_dict() for d in duplicates])
        raise refusal
    stamp = parts.stamp()
    template_ids = []
    with parts.store.transaction():
        require_enrollable(parts, subject_id)  # again, under the write lock
        data_key = enrolment_data_key(parts, subject_id)
        digests = sources if sources is not None else [p.photo for p in probes]
        for vector, source in zip(protected, digests, strict=True):
            template = TemplateRecord(uuid.uuid4().hex, subject_id, model_id, b"", stamp)
            sealed = parts.keyring.seal_template(template, vector, data_key)
            stored = TemplateRecord(
                template.template_id, subject_id, model_id, sealed, stamp,
                None if source is None else source_digest(data_key, source),
            )
            parts.store.insert_template(stored)
            put_server_side_vectors(parts, [(stored, vector)])
            template_ids.append(template.template_id)
            parts.pause("enroll:template-written")
        photos = 0
        for probe in probes if keep_photos else []:
            photo_id = uuid.uuid4().hex
            sealed = crypto.seal(data_key, probe.photo or b"", f"photo:{photo_id}:{subject_id}")
            parts.store.insert_photo(PhotoRecord(photo_id, subject_id, sealed, stamp))
            photos += 1
        parts.store.touch_subject(subject_id, stamp)
        parts.store.bump_generation()
        event = parts.audit.append(
            "enrol",
            actor=actor,
            subject_ids=[subject_id],
            template_ids=template_ids,
            model_id=model_id,
            photos_stored=photos,
            duplicates=[d.to_dict() for d in duplicates],
            operating_point=point.name,
        )
    return EnrolmentResult(
        subject_id, tuple(template_ids), model_id, photos, tuple(duplicates), event.seq
    )


def source_digest(data_key: bytes, photo: bytes) -> str:
    """The keyed digest of an enrolment photo kept with its template (hex HMAC-SHA256).

    Keyed by the subject's data key: it recognises a photo enrolled before
    (resumable batch enrolment), and links to no photo once the key is destroyed.
    """
    return hmac.new(data_key, b"source-photo:" + photo, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class EnrolledSources:
    """The keyed digests of the photos a subject's templates came from.

    Lets a re-run batch enrolment skip photos already enrolled, without
    keeping the photos: :meth:`contains` recomputes the keyed digest.
    """

    digests: frozenset[str]
    data_key: bytes | None = field(default=None, repr=False)

    def contains(self, photo: bytes) -> bool:
        """Whether ``photo`` (its encoded bytes) is already enrolled for the subject."""
        return self.data_key is not None and source_digest(self.data_key, photo) in self.digests


def enrolled_sources(parts: GalleryParts, subject_id: str) -> EnrolledSources:
    """The subject's :class:`EnrolledSources` (empty when it has no data key yet)."""
    data_key = parts.keyring.data_key(subject_id)
    if data_key is None:
        return EnrolledSources(frozenset())
    with parts.store.snapshot():
        templates = parts.store.templates_of(subject_id)
    digests = frozenset(t.source_digest for t in templates if t.source_digest)
    return EnrolledSources(digests, data_key)


def require_enrollable(parts: GalleryParts, subject_id: str) -> None:
    """Raise UnknownSubject or the specific consent error unless ``subject_id`` may enrol."""
    with parts.store.snapshot():
        require_active_consent(parts, subject_id, None)


def enrolment_data_key(parts: GalleryParts, subject_id: str) -> bytes:
    """The subject's data key for an enrolment; call it under the store's write lock.

    One read of the key store when the subject has a key. Under the lock, an
    erasure cannot delete the subject's data between this read and the
    enrolment's commit: its last step waits for the lock and then deletes
    what the enrolment wrote too. A subject without a key gets a new one
    (:meth:`~.keyring.Keyring.make_data_key`), unless it has stored templates
    or photos: only an erasure stopped (or still running) between destroying
    the key (its first step) and deleting the data leaves that, and a new key
    would put fresh templates beside ciphertext no key opens, and the erasure
    would never be finished.

    Raises
    ------
    StoreError
        The subject's data key was destroyed under its stored biometric data.
    KeyMaterialError
        A key was to be made, but the master key was rotated since the gallery was opened.
    """
    wrapped = parts.keystore.get_key(subject_id)
    if wrapped is not None:
        return parts.keyring.unwrap_data_key(subject_id, wrapped)
    if parts.store.subjects_with_biometrics([subject_id]):
        raise _shredded(subject_id)
    return parts.keyring.make_data_key(subject_id, now=parts.now())


def _shredded(subject_id: str) -> StoreError:
    return StoreError(
        f"Subject {subject_id!r} has stored biometric data whose data key was destroyed: "
        "an erasure of this subject was stopped before it finished, and nothing was "
        "enrolled. Run `facetrust retention sweep` to finish the erasure; the subject's "
        "id is then kept as a tombstone, so enrol the person under a new id."
    )


def find_duplicates(
    parts: GalleryParts,
    protected: Sequence[npt.NDArray[np.float32]],
    model_id: str,
    point: OperatingPoint,
    secret: bytes,
    subject_id: str,
) -> list[DuplicateMatch]:
    """Other subjects (with any active consent) within the threshold of the new templates.

    The same search as identification, at the same operating point (score
    normalization included), over every other subject with an active consent.
    """
    best: dict[str, float] = {}
    for vector in protected:
        found = search_templates(
            parts, vector, model_id, purpose=None, point=point, secret=secret, k=5,
            exclude=subject_id, count_searched=False,
        )
        for hit in found.hits:
            best[hit.subject_id] = min(best.get(hit.subject_id, hit.distance), hit.distance)
    return [DuplicateMatch(s, d) for s, d in sorted(best.items(), key=lambda x: x[1])]
