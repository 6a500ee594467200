"""Every error facetrust raises, as one small hierarchy.

Catch :class:`FacetrustError` to handle them all. Each message says what was
expected, what was received and what to do next. Where an error is also a
builtin category it inherits both (``InvalidParameter`` is a ``ValueError``).

::

    FacetrustError
    ├── InvalidParameter (ValueError)
    │   └── ModelMismatch            templates of different embedding models
    ├── ImageError (ValueError)
    │   ├── NotAnImage
    │   ├── CorruptImage
    │   ├── ImageTooLarge
    │   ├── ImageTooSmall
    │   └── UnsupportedImageMode
    ├── FaceError
    │   ├── NoFaceFound              failure to acquire: no face detected
    │   ├── MultipleFaces            several faces and no policy to pick one
    │   └── FaceQualityTooLow        face too small, blurred or turned away
    ├── ModelError                   model weights missing, corrupt or incompatible
    ├── WorkerStopped                an embedding worker process ended before its images
    ├── Interrupted                  stopped by Ctrl-C or SIGTERM before the end: re-run
    │   └── RunStopped               a gate run stopped before a person seen was decided
    ├── OperatingPointError (KeyError-like lookups of thresholds)
    ├── ConsentError
    │   ├── ConsentRequired          no active consent for the subject
    │   ├── ConsentExpired
    │   ├── ConsentWithdrawn
    │   └── PurposeNotConsented
    ├── PurposeRequired              a search was attempted without a purpose
    ├── UnknownSubject
    │   └── SubjectNotVerifiable     one answer for "unknown" and "not consented" (verify)
    ├── UnknownIdentification        no identification with that id
    ├── ReviewClosed                 the candidate is decided, or this reviewer already reviewed
    ├── DuplicateEnrolment           face already enrolled under another subject
    ├── KeyMaterialError             master key missing, wrong or unreadable
    ├── StoreError                   the store is missing, locked or inconsistent
    │   ├── StoreUnavailable         its database server cannot be reached now: retry
    │   └── ApiKeyRowInvalid         an API key row's seal is missing or wrong
    ├── IndexFileError               a saved vector index is unreadable or corrupt
    │   └── StaleIndex               a saved index no longer fits the store: rebuild it
    ├── AuditChainBroken             the audit log failed verification
    ├── AuthorizationError           the caller's role may not do this
    │   └── ReviewNotAllowed         e.g. the operator who ran a search reviewing it
    ├── FrameSourceError             a video, camera or frame folder cannot be read
    ├── EventError                   an event is unknown, closed or outside its window
    │   └── EventOnlySubject         enrolled for one event only: its gate alone matches them
    └── EvaluationError              bad pairs/labels files, too little data
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .faces import Face


class FacetrustError(Exception):
    """Base class of every error raised by facetrust.

    ``field`` names the parameter at fault when there is one (``"case_ref"``),
    so that each entry point can point at it in its own terms (the CLI's
    ``--case-ref``, a console form's label) while the message stays the same.
    """

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


@contextmanager
def errors_about(field: str) -> Iterator[None]:
    """A :class:`FacetrustError` raised inside names ``field`` as the parameter at fault,
    unless it names one already: where one call reads several images (``image_a``,
    ``image_b``), each entry point can then say which was refused.
    """
    try:
        yield
    except FacetrustError as error:
        if error.field is None:
            error.field = field
        raise


class InvalidParameter(FacetrustError, ValueError):
    """A function argument is outside its allowed range or of the wrong kind."""


class ImageError(FacetrustError, ValueError):
    """An input could not be turned into a usable image."""


class NotAnImage(ImageError):
    """The input is not an image in a supported format (JPEG, PNG, WebP, BMP)."""


class CorruptImage(ImageError):
    """The input looks like an image but is truncated or damaged."""


class ImageTooLarge(ImageError):
    """The image (bytes or pixels) exceeds the configured cap.

    Refused before decoding, so a decompression bomb never allocates memory.
    ``setting`` names the :class:`~facetrust.config.Settings` field that is the cap
    (``max_bytes`` or ``max_pixels``): the message tells whoever sent the photo to
    send a smaller one, and an entry point run by the operator (the CLI) may add how
    to raise the cap.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting

    def cap_hint(self) -> str:
        """For the operator: which ``FACETRUST_*`` setting is the cap, and when to raise it
        (empty when ``setting`` is None)."""
        if not self.setting:
            return ""
        return (f"The cap is the setting FACETRUST_{self.setting.upper()}: raise it only for "
                "photos from a source you trust.")


class ImageTooSmall(ImageError):
    """The image is too small (in pixels) to hold a recognisable face."""


class UnsupportedImageMode(ImageError):
    """The image's pixel mode or array shape cannot be converted to RGB."""


class FaceError(FacetrustError):
    """The image holds no usable face, or not exactly one where one is needed."""


class NoFaceFound(FaceError):
    """Failure to acquire: no face was detected in the image."""


class MultipleFaces(FaceError):
    """Several faces were found and the caller gave no policy to choose one."""


class FaceQualityTooLow(FaceError):
    """A face was found but fails the quality minimums (size, sharpness, pose).

    ``face`` is the face that failed (its ``quality.checks`` hold each value
    and limit) when the pipeline raised it; None otherwise.
    """

    def __init__(self, message: str, face: Face | None = None) -> None:
        super().__init__(message)
        self.face = face


class ModelError(FacetrustError):
    """Model weights are missing, unreadable, corrupt or from another model."""


class WorkerStopped(FacetrustError):
    """An embedding worker process ended (killed, out of memory) before its images were done."""


class Interrupted(FacetrustError):
    """A long run was stopped (Ctrl-C, SIGTERM) before its end; what it finished is kept."""


class RunStopped(Interrupted):
    """A gate run stopped (Ctrl-C, or its caller stopped reading decisions) before a
    person it had seen was decided: the reason audited for that person."""


class OperatingPointError(FacetrustError, KeyError):
    """An operating point name is unknown or does not fit the embedding model."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ConsentError(FacetrustError):
    """The subject's consent does not allow what was asked."""


class ConsentRequired(ConsentError):
    """The subject has no active consent on record."""


class ConsentExpired(ConsentError):
    """The subject's consent has passed its expiry date."""


class ConsentWithdrawn(ConsentError):
    """The subject withdrew the consent."""


class PurposeNotConsented(ConsentError):
    """The subject's consent does not cover the stated purpose."""


class PurposeRequired(FacetrustError, ValueError):
    """A search or verification was attempted without stating its purpose."""


class UnknownSubject(FacetrustError, LookupError):
    """No subject with that id exists (or it was erased)."""


class SubjectNotVerifiable(UnknownSubject):
    """No subject with that id may be verified for the stated purpose: never added,
    erased, past retention, or without an active consent that covers the purpose.

    One error for all of these, so that a 1:1 verification does not tell the
    operator (who may not list subjects) which subjects exist or what else
    they consented to. The real reason is its ``__cause__``, and it is what
    the audit log records.
    """


class UnknownIdentification(FacetrustError, LookupError):
    """No identification with that id in this gallery."""


class ReviewClosed(FacetrustError):
    """A review the candidate's state does not allow: it is already confirmed or
    rejected (decisions are final), or this reviewer has already reviewed it."""


class DuplicateEnrolment(FacetrustError):
    """The face already matches another enrolled subject above the threshold."""


class ModelMismatch(InvalidParameter):
    """Templates from different embedding models were to be compared or mixed."""


class KeyMaterialError(FacetrustError):
    """A key is missing, unreadable, has the wrong permissions or does not fit the data."""


class StoreError(FacetrustError):
    """The store cannot be opened, is locked, or is not a facetrust store."""


class StoreUnavailable(StoreError):
    """The store's database server cannot be reached (connection lost, server restarting).

    Nothing of the failed call was committed unless it was the commit itself.
    The connection is opened again on the next call: retry.
    """


class ApiKeyRowInvalid(StoreError):
    """An API key row in the service database has no seal, or a wrong one.

    The service refuses such a key as it refuses an unknown one, and audits the
    refusal; ``key_id`` names the row and ``problem`` says which:
    ``"api-key-row-unsealed"`` (no seal: made before rows were sealed, or
    inserted by someone without the gallery's key) or ``"api-key-row-tampered"``
    (a seal that does not fit the row: changed without the gallery's key).
    """

    def __init__(self, message: str, *, key_id: str, problem: str) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.problem = problem


class IndexFileError(FacetrustError):
    """A saved vector index is missing, truncated, corrupt or not a facetrust index."""


class StaleIndex(IndexFileError):
    """A saved vector index is intact but does not fit what the store holds now.

    Its model, dimension, size or id list differ from those expected; rebuild it
    from the store's templates.
    """


class AuditChainBroken(FacetrustError):
    """The audit log failed verification: an event was edited, removed, inserted or reordered."""


class AuthorizationError(FacetrustError, PermissionError):
    """The caller's role does not allow this action."""


class ReviewNotAllowed(AuthorizationError):
    """This reviewer may not review this identification (by default the operator who
    ran the search may not review its candidates)."""


class FrameSourceError(FacetrustError):
    """A video file, camera device or folder of frames cannot be opened or read."""


class EventError(FacetrustError):
    """The event is unknown, closed, outside its window, or the request does not fit it."""


class EventOnlySubject(EventError):
    """The subject was enrolled for one event only, with a consent that covers that
    event alone: only its gate may match them, never a verification or search outside it.

    ``event_id`` names the event.
    """

    def __init__(self, *args: object, event_id: str, field: str | None = None) -> None:
        super().__init__(*args, field=field)
        self.event_id = event_id


class EvaluationError(FacetrustError, ValueError):
    """An evaluation input (pairs, labels, images) is malformed or too small."""
