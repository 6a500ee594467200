"""Photo-level gallery operations a remote caller needs in one call.

* :func:`enroll_photo`: enrol one uploaded photo and return the face that was
  detected and its quality checks (a console shows them to the enroller).
* :func:`verify_photos`: compare two photos (1:1) for a stated purpose, and
  audit it like every other use of biometric data in the gallery. The plain
  :func:`facetrust.verify` audits nothing; a service must not use it.

Neither keeps the photos: only their SHA-256 goes into the audit log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..errors import errors_about
from ..faces import Face
from ..matching import Verdict, compare
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy
from .checks import check_case_ref, check_name
from .core import Gallery
from .probes import FaceInput
from .refusals import audit_refusal
from .types import EnrolmentResult


@dataclass(frozen=True)
class PhotoEnrolment:
    """An enrolment from one photo, with the face the template was made from.

    Attributes
    ----------
    enrolment : EnrolmentResult
    face : Face
        Box (original-image pixels), landmarks, quality checks and the aligned
        150x150 chip (``face.chip``, uint8 RGB).
    photo_sha256 : str
    """

    enrolment: EnrolmentResult
    face: Face
    photo_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.enrolment.to_dict(),
            "face": self.face.to_dict(),
            "photo_sha256": self.photo_sha256,
        }


@dataclass(frozen=True)
class PhotoVerification:
    """The outcome of an audited 1:1 comparison of two photos.

    ``verdict.distance`` is the Euclidean distance between the two templates
    (lower is more similar); ``verdict.match`` is ``distance <= threshold``.
    """

    verdict: Verdict
    purpose: str
    case_ref: str | None
    photo_sha256: tuple[str, str]
    faces: tuple[Face, Face]
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.verdict.to_dict(),
            "purpose": self.purpose,
            "case_ref": self.case_ref,
            "photo_sha256": list(self.photo_sha256),
            "faces": [f.to_dict() for f in self.faces],
            "audit_seq": self.audit_seq,
        }


def enroll_photo(
    gallery: Gallery,
    subject_id: str,
    photo: bytes,
    *,
    actor: str,
    keep_photo: bool = False,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> PhotoEnrolment:
    """Enrol the face of ``photo`` (encoded image bytes) ``face_policy`` picks for ``subject_id``.

    ``face_policy`` is ``"dominant"`` (the photo's one clear subject),
    ``"single"`` (refuse a photo with several faces), ``"largest"``, ``"crop"``
    (the photo is already a face crop) or a face index (0 = largest); see
    :data:`facetrust.pipeline.FacePolicy`.

    Consent is checked before any face is computed. The face must pass the
    quality minimums; the enrolment's audit event records the photo's SHA-256.

    Raises
    ------
    UnknownSubject, ConsentRequired, ConsentWithdrawn, ConsentExpired
    NotAnImage, CorruptImage, ImageTooLarge, ImageTooSmall
    NoFaceFound, MultipleFaces, FaceQualityTooLow, DuplicateEnrolment
    """
    with audit_refusal(gallery.audit, "enrol", actor, None, [subject_id]):
        gallery.require_consent(subject_id, None)
        embedded = gallery.pipeline.embed_one(photo, face_policy, check_quality=True)
    # The template just computed is enrolled as is (the photo is not embedded twice);
    # the photo itself goes in only when it is to be kept.
    source: FaceInput = photo if keep_photo else embedded.embedding
    result = gallery.enroll(
        subject_id, [source], actor=actor, keep_photos=keep_photo, face_policy=face_policy
    )
    return PhotoEnrolment(result, embedded.face, hashlib.sha256(photo).hexdigest())


def verify_photos(
    gallery: Gallery,
    photo_a: bytes,
    photo_b: bytes,
    *,
    purpose: str | None,
    actor: str,
    case_ref: str | None,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> PhotoVerification:
    """Decide whether two photos show the same person, at the gallery's operating point.

    Nothing is read from or written to the gallery's templates; the check is
    audited (kind ``"verify.photos"``) with both photos' SHA-256. ``face_policy``
    picks the face of each photo (:data:`facetrust.pipeline.FacePolicy`).

    ``case_ref`` (required) names the case or ticket the check belongs to.

    Raises
    ------
    PurposeRequired, InvalidParameter
    NotAnImage, CorruptImage, ImageTooLarge, NoFaceFound, MultipleFaces, FaceQualityTooLow
    """
    with audit_refusal(gallery.audit, "verify.photos", actor, purpose, [], case_ref=case_ref):
        purpose = gallery.check_purpose(purpose)
        actor = check_name(actor, "actor")
        case_ref = check_case_ref(case_ref)
        with errors_about("image_a"):  # which photo was refused: ``error.field``
            a = gallery.pipeline.embed_one(photo_a, face_policy, check_quality=True)
        with errors_about("image_b"):
            b = gallery.pipeline.embed_one(photo_b, face_policy, check_quality=True)
    point = gallery.operating_point(a.embedding.model_id)
    verdict = compare(a.embedding, b.embedding, point)
    digests = (hashlib.sha256(photo_a).hexdigest(), hashlib.sha256(photo_b).hexdigest())
    event = gallery.audit.append(
        "verify.photos",
        actor=actor,
        purpose=purpose,
        case_ref=case_ref,
        probe_sha256=list(digests),
        match=verdict.match,
        distance=verdict.distance,
        threshold=verdict.threshold,
        operating_point=verdict.operating_point,
        model_id=verdict.model_id,
    )
    return PhotoVerification(verdict, purpose, case_ref, digests, (a.face, b.face), event.seq)
