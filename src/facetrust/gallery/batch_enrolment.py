"""Batch enrolment: thousands of consented photos from a folder and a consent CSV.

The CSV (``--consents``) is read by :mod:`facetrust.gallery.consent_csv`: one
row per photo file or subject folder, giving its subject and consent.

Photos are embedded on every core (:func:`facetrust.embed_many`), then each
subject is written in one all-or-nothing transaction (:meth:`Gallery.batch`):
subject, consent and templates. Each template keeps a keyed digest of its
photo, so a re-run (after a crash, even SIGKILL) skips photos enrolled before
and finishes with every photo enrolled exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import ImageResult, check_pipeline_workers, check_workers, embed_many
from ..errors import (
    ConsentError,
    ConsentWithdrawn,
    CorruptImage,
    DuplicateEnrolment,
    FaceError,
    FaceQualityTooLow,
    FacetrustError,
    ImageError,
    ImageTooLarge,
    ImageTooSmall,
    Interrupted,
    InvalidParameter,
    MultipleFaces,
    NoFaceFound,
    NotAnImage,
    UnknownSubject,
    UnsupportedImageMode,
    WorkerStopped,
)
from ..faces import Embedding, Quality
from ..images import read_image_file
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy
from ..text import canonical, readable_path
from .checks import check_display_name, check_name, check_subject_id
from .consent_csv import ConsentRow, images_in, photo_path, read_consent_csv
from .core import Gallery
from .enrolment import EnrolledSources

#: The failure reason of a consent CSV row that names no photo of the folder.
PHOTO_NOT_FOUND = "photo-not-found"

#: The CSV columns of a row's subject (a bad one fails its photos as ``subject-invalid``).
SUBJECT_FIELDS = ("subject_id", "display_name")

#: The failure reason of a photo that the error stopped, by the error's class, most
#: specific first (the first ``isinstance`` match wins). Each says what to do next in
#: the error's message. A photo error not listed here (a new subclass of
#: :class:`~facetrust.errors.ImageError` or :class:`~facetrust.errors.FaceError`)
#: is reported under its class name in kebab case, never under another's reason.
PHOTO_ERROR_REASONS: tuple[tuple[type[FacetrustError], str], ...] = (
    (NotAnImage, "unreadable"),  # no file, unreadable, or not a JPEG, PNG, WebP or BMP
    (CorruptImage, "corrupt-image"),
    (ImageTooLarge, "image-too-large"),  # over the byte or pixel cap, a decompression bomb
    (ImageTooSmall, "image-too-small"),
    (UnsupportedImageMode, "unsupported-image-mode"),
    (NoFaceFound, "no-face"),
    (MultipleFaces, "several-faces"),
    (FaceQualityTooLow, "quality"),  # with its face: the reason of its first failed check
)

#: The failure reason of a face below a quality minimum, by the first check it fails
#: (:attr:`facetrust.faces.QualityCheck.name`).
QUALITY_REASONS = {
    "inter_eye_px": "face-too-small",
    "sharpness": "face-blurred",
    "yaw": "face-turned-away",
    "roll_deg": "head-tilted",
}

#: Failure reasons, as reported.
REASONS = (
    *dict.fromkeys(reason for _, reason in PHOTO_ERROR_REASONS), *QUALITY_REASONS.values(),
    "no-consent-in-csv", "photo-not-found", "subject-invalid", "consent-invalid",
    "consent-withdrawn", "subject-erased", "duplicate", "abandoned", "other",
)

@dataclass(frozen=True)
class BatchFailure:
    """A photo that was not enrolled, and why (one of :data:`REASONS`)."""

    photo: str
    reason: str
    message: str


@dataclass(frozen=True)
class BatchEnrolmentResult:
    """What a batch enrolment did.

    Attributes
    ----------
    enrolled : int
        Photos enrolled by this run.
    already_enrolled : int
        Photos skipped because an earlier run enrolled them.
    subjects : int
        Subjects written by this run.
    failures : tuple of BatchFailure
    seconds : float
        Wall time of the run.
    by_reason : dict of str to int
        ``failures`` counted by reason.
    queue : str or None
        The queue, for a queue worker's result.
    failed_elsewhere : int
        With a queue: its failed photos that are not among ``failures`` (failed
        by an earlier or another worker, or put in failed as not in the CSV, or
        as a CSV row naming no photo).
    """

    enrolled: int
    already_enrolled: int
    subjects: int
    failures: tuple[BatchFailure, ...]
    seconds: float
    by_reason: dict[str, int] = field(default_factory=dict)
    queue: str | None = None
    failed_elsewhere: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            "already_enrolled": self.already_enrolled,
            "subjects": self.subjects,
            "failed": len(self.failures),
            "failures_by_reason": self.by_reason,
            "failures": [vars(f) for f in self.failures],
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(self.enrolled / self.seconds, 3) if self.seconds else 0.0,
            **({"queue": self.queue, "failed_elsewhere": self.failed_elsewhere}
               if self.queue is not None else {}),
        }

    def next_step(self) -> str | None:
        """What to do about failed photos this result does not list; None if there are none."""
        if not self.failed_elsewhere:
            return None
        count = self.failed_elsewhere
        return (
            f"{count} photo{'s' if count > 1 else ''} of queue {self.queue} failed earlier "
            "(in another worker, or when the queue was filled: not in the consent CSV, or "
            "a CSV row naming no photo) and "
            f"{'are' if count > 1 else 'is'} not counted above: see "
            f"`facetrust enroll-batch status --queue {self.queue}`."
        )

    def table(self) -> str:
        """The failures by reason as a plain-text table, then the next step if any."""
        lines = [f"{'reason':<20} {'photos':>7}", f"{'-' * 20} {'-' * 7}"]
        lines += [f"{reason:<20} {count:>7}" for reason, count in self.by_reason.items()]
        lines.append(f"{'enrolled':<20} {self.enrolled:>7}")
        lines.append(f"{'already enrolled':<20} {self.already_enrolled:>7}")
        if (step := self.next_step()) is not None:
            lines.append(step)
        return "\n".join(lines)

def image_problem(result: ImageResult) -> tuple[str, str] | None:
    """Why a photo's result cannot be enrolled, as (reason, message); None if it can."""
    if result.error is not None:
        return failure_reason(result.error), failure_message(result.error)
    if not result.faces:
        return "no-face", "No face was found in the photo."
    quality = result.faces[0].face.quality
    if not quality.passed:
        return (quality_reason(quality),
                "The face fails the quality minimums: " + "; ".join(quality.reasons) + ".")
    return None


def quality_reason(quality: Quality) -> str:
    """The failure reason of a face that fails ``quality``: that of its first failed check."""
    for check in quality.checks:
        if not check.passed:
            return QUALITY_REASONS.get(check.name, "quality")
    return "quality"


def failure_message(error: FacetrustError) -> str:
    """What a batch reports of ``error``: its message, and for a photo over a cap, the
    setting that is the cap (a batch is run by the gallery's operator)."""
    if isinstance(error, ImageTooLarge) and error.setting:
        return f"{error} {error.cap_hint()}"
    return str(error)


def count_by_reason(failures: Sequence[BatchFailure]) -> dict[str, int]:
    """How many of ``failures`` there are of each reason, by reason name."""
    by_reason: dict[str, int] = {}
    for failure in failures:
        by_reason[failure.reason] = by_reason.get(failure.reason, 0) + 1
    return dict(sorted(by_reason.items()))


def failed_photo(photo: str | os.PathLike[str], error: FacetrustError) -> BatchFailure:
    """The failure of ``photo`` that ``error`` stopped, under the photo's readable name."""
    return BatchFailure(readable_path(photo), failure_reason(error), failure_message(error))


def failure_reason(error: FacetrustError) -> str:
    """The failure reason (one of :data:`REASONS`) of an error raised by reading a photo,
    embedding its face (:data:`PHOTO_ERROR_REASONS`) or enrolling it.

    A batch adds a subject it does not know, so an unknown subject is an erased one.
    """
    if isinstance(error, FaceQualityTooLow) and error.face is not None:
        return quality_reason(error.face.quality)
    for kind, reason in PHOTO_ERROR_REASONS:
        if isinstance(error, kind):
            return reason
    if isinstance(error, ImageError | FaceError):  # a photo error not listed above
        name = type(error).__name__
        return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")
    if isinstance(error, ConsentWithdrawn):
        return "consent-withdrawn"
    if isinstance(error, UnknownSubject):
        return "subject-erased"
    if isinstance(error, InvalidParameter) and error.field in SUBJECT_FIELDS:
        return "subject-invalid"
    if isinstance(error, ConsentError | InvalidParameter):
        return "consent-invalid"
    if isinstance(error, DuplicateEnrolment):
        return "duplicate"
    return "other"


def enroll_batch(
    gallery: Gallery,
    folder: str | os.PathLike[str],
    consents_csv: str | os.PathLike[str],
    *,
    actor: str,
    workers: int | None = None,
    progress: bool = False,
    check_duplicates: bool | None = None,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> BatchEnrolmentResult:
    """Enrol every photo under ``folder`` listed in ``consents_csv``; resumable.

    Parameters
    ----------
    folder : path
        The photo folder (searched recursively for images).
    consents_csv : path
        The consent CSV (see the module docstring).
    workers : int, optional
        Embedding processes, in [1, :data:`~facetrust.batch.MAX_WORKERS`]
        (default: one per core). Photos are embedded with the gallery's own
        pipeline; one given custom models runs in this process (default 1) and
        refuses ``workers`` above 1 (see :func:`facetrust.embed_many`).
    progress : bool
        A progress bar with rate and ETA on stderr.
    check_duplicates : bool, optional
        Search each new face against other subjects (slower). Default: only
        when the gallery's duplicate policy is "refuse", so that the policy
        is never bypassed; a "warn" gallery skips it for speed.
    face_policy : FacePolicy
        Which face of each photo (:data:`facetrust.pipeline.FacePolicy`):
        ``"crop"`` when the folder holds face crops (no detection).
    """
    started = time.perf_counter()
    actor = check_name(actor, "actor")
    check_workers(workers, "enroll_batch")
    check_pipeline_workers(gallery.pipeline, workers, "enroll_batch")
    if check_duplicates is None:
        check_duplicates = gallery.config.duplicate_policy == "refuse"
    base = photo_path(folder)
    if not base.is_dir():
        raise InvalidParameter(f"The photo folder {str(base)!r} does not exist or is not a folder.")
    read = read_consent_csv(consents_csv, base)
    consents = read.rows
    failures = [BatchFailure(readable_path(u.photo), PHOTO_NOT_FOUND, u.message)
                for u in read.unmatched]
    photos = images_in(base)
    for photo in photos:
        if photo not in consents:
            failures.append(BatchFailure(
                readable_path(photo), "no-consent-in-csv",
                "The consent CSV has no row for this photo.",
            ))
    # Group by subject so each subject is one transaction, and skip what a
    # previous run enrolled (recognised by the keyed digest of the photo).
    todo: list[Path] = []  # paths only: thousands of photos are not held in memory
    max_bytes = gallery.pipeline.settings.max_bytes  # a file over it is refused unread
    already = 0
    known: dict[str, EnrolledSources] = {}
    for photo in sorted((p for p in photos if p in consents), key=lambda p: consents[p].subject_id):
        row = consents[photo]
        if row.subject_id not in known:
            known[row.subject_id] = gallery.enrolled_sources(row.subject_id)
        try:
            raw = read_image_file(photo, max_bytes)
        except ImageError as error:  # the reason a single photo gets
            failures.append(failed_photo(photo, error))
            continue
        if known[row.subject_id].contains(raw):
            already += 1
            continue
        todo.append(photo)
    enrolled = subjects = 0
    refused: list[dict[str, str]] = []  # their own audit events rolled back with them
    results = embed_many(  # the gallery's own pipeline: its templates, its model id
        todo, pipeline=gallery.pipeline, workers=workers, progress=progress,
        description="enrolling", face_policy=face_policy,
    )
    try:
        for _, group in _by_subject(zip(todo, results, strict=True), consents):
            faces: list[Embedding] = []
            sources: list[bytes | None] = []
            ready: list[Path] = []
            for photo, result in group:
                problem = image_problem(result)
                if problem is not None:
                    failures.append(BatchFailure(readable_path(photo), *problem))
                    continue
                try:
                    raw = read_image_file(photo, max_bytes)
                except ImageError as error:
                    failures.append(failed_photo(photo, error))
                    continue
                faces.append(result.faces[0].embedding)
                sources.append(raw)
                ready.append(photo)
            if not faces:
                continue
            try:
                write_subject(gallery, consents[ready[0]], faces, sources, actor,
                              check_duplicates)
            except FacetrustError as error:
                failures.extend(failed_photo(photo, error) for photo in ready)
                subject_id = consents[ready[0]].subject_id
                refused.append({"subject_id": subject_id, "reason": failure_reason(error),
                                "error": type(error).__name__})
                continue
            enrolled += len(faces)
            subjects += 1
    except WorkerStopped:
        _audit_batch(gallery, actor, refused, enrolled, already, subjects, failures,
                     stopped=True)
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where the caller turns it into one
        results.close()  # the worker processes end first
        _audit_batch(gallery, actor, refused, enrolled, already, subjects, failures,
                     stopped=True)
        raise Interrupted(
            f"Batch enrolment stopped before its end, after enrolling {enrolled} "
            f"photo{'' if enrolled == 1 else 's'} of {subjects} "
            f"subject{'' if subjects == 1 else 's'} in this run (kept; a subject is "
            "written whole or not at all). Run the same command again to enrol the rest: "
            "photos enrolled before are skipped."
        ) from None
    by_reason = _audit_batch(gallery, actor, refused, enrolled, already, subjects, failures)
    return BatchEnrolmentResult(
        enrolled, already, subjects, tuple(failures), time.perf_counter() - started,
        by_reason,
    )


def _audit_batch(
    gallery: Gallery, actor: str, refused: list[dict[str, str]], enrolled: int,
    already: int, subjects: int, failures: Sequence[BatchFailure], *, stopped: bool = False,
) -> dict[str, int]:
    """The batch's summary audit event (``stopped``: interrupted before its end); the
    failures by reason."""
    by_reason = count_by_reason(failures)
    extra: dict[str, Any] = {"stopped": True} if stopped else {}
    gallery.audit.append(
        "enrol.batch",
        actor=actor,
        subject_ids=[r["subject_id"] for r in refused],
        photos_enrolled=enrolled,
        photos_already_enrolled=already,
        subjects_written=subjects,
        failures_by_reason=by_reason,
        refused_subjects=refused,
        **extra,
    )
    return by_reason


def _by_subject(
    items: Iterable[tuple[Path, ImageResult]], consents: dict[Path, ConsentRow]
) -> Iterator[tuple[str, list[tuple[Path, ImageResult]]]]:
    """Consecutive results of one subject (the input is sorted by subject)."""
    current: str | None = None
    group: list[tuple[Path, ImageResult]] = []
    for item in items:
        subject_id = consents[item[0]].subject_id
        if subject_id != current and group:
            yield current or "", group
            group = []
        current = subject_id
        group.append(item)
    if group:
        yield current or "", group


def write_subject(
    gallery: Gallery,
    row: ConsentRow,
    faces: list[Embedding],
    sources: list[bytes | None],
    actor: str,
    check_duplicates: bool,
) -> None:
    """Subject (if new), consent (if not recorded yet) and templates: one transaction.

    Joins the caller's transaction when one is open (a queue worker marks the
    photos done in the same one).

    Raises
    ------
    UnknownSubject
        The subject was erased (forgotten): never enrolled again.
    ConsentWithdrawn
        The subject withdrew a consent with the row's evidence (``evidence_ref``
        and ``evidence_sha256``): it is not granted again from the same evidence.
    """
    # The row's subject, not its consent, is at fault: said so by the field.
    try:
        check_subject_id(row.subject_id)
    except InvalidParameter as error:
        raise InvalidParameter(str(error), field="subject_id") from None
    try:
        check_display_name(row.display_name)
    except InvalidParameter as error:
        raise InvalidParameter(str(error), field="display_name") from None
    with gallery.batch():
        subject = gallery.store.get_subject(row.subject_id)
        if subject is not None and subject.erased_at is not None:
            raise UnknownSubject(
                f"Subject {row.subject_id!r} was erased from this gallery on "
                f"{subject.erased_at} (forgotten): an erased subject is never enrolled "
                "again. Remove its rows from the consent CSV."
            )
        if subject is None:
            gallery.add_subject(row.subject_id, display_name=row.display_name, actor=actor)
        evidence = (row.evidence_ref, row.evidence_sha256.lower())
        same = [
            c for c in gallery.store.consents_of(row.subject_id)
            # canonical: a consent recorded before the gallery stored text in NFC
            if (canonical(c.evidence_ref), c.evidence_sha256.lower()) == evidence
        ]
        withdrawn = [c for c in same if c.withdrawn_at is not None]
        if withdrawn and len(withdrawn) == len(same):
            # the withdrawal stands: an old form is not consent given again
            raise ConsentWithdrawn(
                f"Subject {row.subject_id!r} withdrew the consent of evidence "
                f"{row.evidence_ref!r} on {withdrawn[-1].withdrawn_at}: it is never granted "
                "again from the same evidence. Put the subject's new consent form in the "
                "CSV (new evidence_ref and evidence_sha256), or remove its rows."
            )
        if not same:
            gallery.grant_consent(
                row.subject_id, row.purposes, expires_at=row.expires_at,
                evidence_ref=row.evidence_ref, evidence_sha256=row.evidence_sha256,
                notice_version=row.notice_version, actor=actor,
            )
        gallery.enroll(
            row.subject_id, faces, actor=actor, check_duplicates=check_duplicates,
            sources=sources,
        )
