"""Enrolment: consent and quality checks, duplicate search, encryption, one transaction.

The templates, photos, last-interaction time and audit event of one enrolment
are written in one transaction: a process killed half-way leaves nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
from ..pipeline import FacePolicy
from ..store.base import PhotoRecord, TemplateRecord
from .consent import require_consent
from .core import TEMPLATE_SECRET
from .types import (
    DuplicateMatch,
    EnrolmentResult,
)

if TYPE_CHECKING:
    from .core import FaceInput, Gallery


def enroll_subject(
    gallery: Gallery,
    subject_id: str,
    faces: Sequence[FaceInput],
    *,
    actor: str,
    keep_photos: bool = False,
    face_policy: FacePolicy = "single",
    check_duplicates: bool = True,
) -> EnrolmentResult:
    """See :meth:`Gallery.enroll`."""
    actor = gallery._check_name(actor, "actor")
    if not faces:
        raise InvalidParameter("Enrolment needs at least one photo or template. Got none.")
    require_enrollable(gallery, subject_id)
    probes = [gallery._probe(face, face_policy) for face in faces]
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
    secret = gallery._secret(TEMPLATE_SECRET)
    point = gallery._operating_point(model_id)
    protected = [crypto.protect(p.embedding.vector, secret) for p in probes]
    duplicates = (
        find_duplicates(gallery, protected, model_id, point, subject_id) if check_duplicates else []
    )
    if duplicates and gallery.config.duplicate_policy == "refuse":
        gallery.audit.append(
            "enrol.refused",
            actor=actor,
            subject_ids=[subject_id],
            reason="duplicate",
            duplicates=[d.to_dict() for d in duplicates],
        )
        raise DuplicateEnrolment(
            "The face matches already enrolled subject(s) "
            + ", ".join(f"{d.subject_id!r} (distance {d.distance:.3f})" for d in duplicates)
            + f" within threshold {point.threshold}. Check the identity, or use policy 'warn'."
        )
    data_key = gallery._data_key(subject_id, create=True)
    if data_key is None:  # cannot happen: create=True makes one
        raise StoreError(f"The key store did not keep the data key of {subject_id!r}.")
    stamp = gallery._stamp()
    template_ids = []
    with gallery.store.transaction():
        require_enrollable(gallery, subject_id)  # again, under the write lock
        for vector in protected:
            template = TemplateRecord(uuid.uuid4().hex, subject_id, model_id, b"", stamp)
            sealed = crypto.seal(data_key, vector.tobytes(), gallery._template_label(template))
            gallery.store.insert_template(
                TemplateRecord(template.template_id, subject_id, model_id, sealed, stamp)
            )
            template_ids.append(template.template_id)
            gallery._pause("enroll:template-written")
        photos = 0
        for probe in probes if keep_photos else []:
            photo_id = uuid.uuid4().hex
            sealed = crypto.seal(data_key, probe.photo or b"", f"photo:{photo_id}:{subject_id}")
            gallery.store.insert_photo(PhotoRecord(photo_id, subject_id, sealed, stamp))
            photos += 1
        gallery.store.touch_subject(subject_id, stamp)
        gallery.store.bump_generation()
        event = gallery.audit.append(
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


def require_enrollable(gallery: Gallery, subject_id: str) -> None:
    """Raise UnknownSubject or the specific consent error unless ``subject_id`` may enrol."""
    with gallery.store.snapshot():
        gallery._subject_record(subject_id)
        require_consent(gallery.store.consents_of(subject_id), None, gallery._now(), subject_id)


def find_duplicates(
    gallery: Gallery,
    protected: Sequence[npt.NDArray[np.float32]],
    model_id: str,
    point: OperatingPoint,
    subject_id: str,
) -> list[DuplicateMatch]:
    """Other subjects (with any active consent) within the threshold of the new templates."""
    index = gallery._index(model_id)
    best: dict[str, float] = {}
    for vector in protected:
        hits, _ = index.search(
            vector, purpose=None, now=gallery._now(), k=5, threshold=point.threshold,
            exclude=subject_id,
        )
        for hit in hits:
            best[hit.subject_id] = min(best.get(hit.subject_id, hit.distance), hit.distance)
    return [DuplicateMatch(s, d) for s, d in sorted(best.items(), key=lambda x: x[1])]
