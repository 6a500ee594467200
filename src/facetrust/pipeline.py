"""Image in, faces and embeddings out.

Detection runs on a downscaled grayscale copy (detection cost grows with
pixels; the landmarks and the descriptor do not need it at full size) and the
boxes are mapped back to original coordinates. Landmarks and the aligned chip
are computed on the full-resolution RGB image, as dlib's models expect.

When the first pass finds nothing, recovery tries, in order of cost (see
:mod:`facetrust.acquisition`): the detector again on a padded (and, for small
images, upsampled) copy, the fallback detector (dlib's CNN detector) on that
copy, and finally the whole image as the face box, accepted only when a
detector confirms a face on the aligned chip the landmarks give.

A caller who knows the image *is* a face crop says so with
``face_policy="crop"``: no detection, landmarks placed from the whole crop, the
normal alignment and quality checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from .acquisition import box_from_landmarks, confirm_face, crop_box, padded_gray
from .config import Settings
from .errors import FaceQualityTooLow, InvalidParameter, MultipleFaces, NoFaceFound
from .faces import Box, EmbeddedFace, Embedding, Face
from .images import ImageSource, RGBImage, load_image
from .models.base import Detection, Detector, Embedder, Landmarker
from .models.selection import default_embedder, make_detector
from .quality import assess_quality
from .text import is_whole_number

#: How to get one face from an image:
#:
#: - ``"dominant"`` (the default of every entry point): the only face, or the
#:   subject of the photo (:func:`dominant_face`: clearly the largest, or the one
#:   face at the image centre); otherwise :class:`~facetrust.errors.MultipleFaces`.
#: - ``"single"``: refuse any image with several faces.
#: - ``"largest"``: the biggest face, whatever the others.
#: - ``"crop"``: the image is already a face crop (pre-aligned input): no
#:   detection, the whole image is the face.
#: - an int: that face, largest first (0 is the largest).
FacePolicy = Literal["dominant", "single", "largest", "crop"] | int

#: One sentence on the face policies, for CLI and REST help.
FACE_POLICY_HELP = (
    "Which face: 'dominant' (the default: the only face, or the photo's clear subject), "
    "'single' (refuse a photo with several faces), 'largest', 'crop' (the image is already "
    "a face crop: no detection), or an index (0 = the largest face)."
)

#: The face policy of every entry point unless the caller picks another.
DEFAULT_FACE_POLICY: FacePolicy = "dominant"

#: Names of the face policies that are not an index, for parsers and messages.
FACE_POLICY_NAMES = ("dominant", "single", "largest", "crop")

#: ``"dominant"`` takes the largest face when its box area is at least this many
#: times the next largest (1.5 times as wide): a face that much nearer the camera
#: is the subject, the smaller ones are in the background.
DOMINANT_AREA_RATIO = 2.25


class FacePipeline:
    """Detect, align, assess and embed faces with one set of models.

    Models load on first use and are reused. An instance is not thread-safe
    (dlib detectors are not): use one per thread or process, or
    :func:`facetrust.batch.embed_many` for many images.

    Parameters
    ----------
    settings : Settings, optional
    detector, landmarker, embedder : optional
        Backends; the dlib ones by default, except the embedder, which is
        :func:`~facetrust.models.selection.default_embedder` (ONNX Runtime
        when installed, else dlib; same descriptors).
    fallback_detector : Detector, optional
        The detector recovery tries when the first one finds nothing; dlib's
        CNN (MMOD) detector by default. Loaded only when first needed.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        detector: Detector | None = None,
        landmarker: Landmarker | None = None,
        embedder: Embedder | None = None,
        fallback_detector: Detector | None = None,
    ) -> None:
        from .models import dlib_backend

        given = {"detector": detector, "landmarker": landmarker, "embedder": embedder,
                 "fallback_detector": fallback_detector}
        #: The backends this pipeline was given instead of building them from its settings.
        self.custom_backends: tuple[str, ...] = tuple(n for n, b in given.items() if b is not None)
        self.settings = settings or Settings.from_env()
        self.detector: Detector = detector or make_detector(self.settings.detector, self.settings)
        if fallback_detector is None:
            fallback_detector = (
                self.detector
                if self.settings.fallback_detector == "none"
                else make_detector(self.settings.fallback_detector, self.settings)
            )
        self.fallback_detector: Detector = fallback_detector
        self.landmarker: Landmarker = landmarker or dlib_backend.DlibLandmarker()
        self.embedder: Embedder = embedder or default_embedder(self.settings)

    @property
    def has_default_models(self) -> bool:
        """True when every backend was built from ``settings`` (none was given), so that
        ``FacePipeline(self.settings)`` in another process is this same pipeline."""
        return not self.custom_backends

    @property
    def model_id(self) -> str:
        """Id of the embedding model, stored with every template."""
        return self.embedder.model_id

    def detect(self, image: ImageSource, face_policy: FacePolicy | None = None) -> list[Face]:
        """Faces in ``image``, largest first, each with landmarks, chip and quality.

        Without ``face_policy``, every face found (an empty list when none is);
        with one, a list of the one face it picks (``"crop"``: the whole image
        as a face crop, no detection).

        Raises
        ------
        NoFaceFound, MultipleFaces
            Only with a ``face_policy``, as :func:`select_face`.
        """
        pixels = load_image(image, self.settings)
        if face_policy == "crop":
            return [self.face_in_crop(pixels)]
        faces = self.faces_in_pixels(pixels)
        if face_policy is None:
            return faces
        size = (pixels.shape[1], pixels.shape[0])
        return [select_face(faces, face_policy, image_size=size)]

    def embed(
        self, image: ImageSource, face_policy: FacePolicy | None = None
    ) -> list[EmbeddedFace]:
        """Every face in ``image`` with its embedding, largest first.

        With ``face_policy``, a list of the one face it picks (see :meth:`detect`).
        """
        return self._embed_faces(self.detect(image, face_policy))

    def embed_one(
        self,
        image: ImageSource,
        face_policy: FacePolicy = DEFAULT_FACE_POLICY,
        *,
        check_quality: bool = True,
    ) -> EmbeddedFace:
        """The embedding of the one face ``face_policy`` picks.

        ``face_policy="crop"`` says the image already is a face crop (a tight
        detector-box crop, a 112x112 ArcFace-style or 150x150 dlib chip, a
        passport-style head-and-shoulders photo): no detection is run.

        Raises
        ------
        NoFaceFound
            No face was detected (failure to acquire).
        MultipleFaces
            Several faces and no single one the policy can pick.
        FaceQualityTooLow
            ``check_quality`` and the chosen face fails the quality minimums.
        """
        face = self.detect(image, face_policy)[0]
        if check_quality:
            require_quality(face)
        return self._embed_faces([face])[0]

    def _embed_faces(self, faces: Sequence[Face]) -> list[EmbeddedFace]:
        chips = [f.chip for f in faces if f.chip is not None]
        vectors = self.embedder.embed(chips)
        return [
            EmbeddedFace(face, Embedding(vector, self.model_id))
            for face, vector in zip(faces, vectors, strict=True)
        ]

    def faces_in_pixels(self, pixels: RGBImage) -> list[Face]:
        """All faces in already decoded pixels (shape (h, w, 3), uint8 RGB), largest first.

        When detection finds nothing and ``settings.detection_retry`` is on,
        recovery runs (module docstring); an empty list when it finds nothing too.
        """
        detections = self._detect_boxes(pixels)
        faces = [self._face_at(pixels, d.box, d.confidence) for d in detections]
        if not faces and self.settings.detection_retry:
            recovered = self._whole_image_face(pixels)
            faces = [] if recovered is None else [recovered]
        faces.sort(key=lambda f: f.box.area, reverse=True)
        return faces

    def face_in_crop(self, pixels: RGBImage) -> Face:
        """The face of an image that is already a face crop (no detection).

        Landmarks are placed from the whole crop, then placed again from the
        box they imply (:func:`facetrust.acquisition.box_from_landmarks`), so
        looser crops (a dlib chip, a passport photo) converge on the face too.
        The face's ``confidence`` is 0.0: no detector scored it.
        """
        box = crop_box(pixels.shape[1], pixels.shape[0])
        for _ in range(3):
            landmarks = self.landmarker.locate(pixels, box)
            box = box_from_landmarks(landmarks)
        return self._face_at(pixels, box, 0.0)

    def _face_at(self, pixels: RGBImage, box: Box, confidence: float) -> Face:
        landmarks = self.landmarker.locate(pixels, box)
        chip = self.landmarker.align(
            pixels, box, landmarks, self.embedder.chip_size, self.embedder.chip_padding
        )
        quality = assess_quality(landmarks, chip, self.settings)
        return Face(box, confidence, landmarks, quality, chip)

    def _whole_image_face(self, pixels: RGBImage) -> Face | None:
        """The last recovery step: the image as the face box, if a detector confirms it."""
        face = self.face_in_crop(pixels)
        detectors = [self.detector]
        if self.fallback_detector.name != self.detector.name:
            detectors.append(self.fallback_detector)
        confidence = confirm_face(self.landmarker, pixels, face, detectors)
        if confidence is None:
            return None
        return Face(face.box, confidence, face.landmarks, face.quality, face.chip)

    def _detect_boxes(self, pixels: RGBImage) -> list[Detection]:
        height, width = pixels.shape[:2]
        max_side = self.settings.detection_max_side
        scale = min(1.0, max_side / max(height, width))
        gray = np.asarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
            scale_y, scale_x = gray.shape[0] / height, gray.shape[1] / width
        else:
            scale_y = scale_x = 1.0
        found = self.detector.detect(gray, 0)
        offset = 0
        if not found and self.settings.detection_retry:
            padded, offset = padded_gray(gray)
            upsample = 1 if 2 * max(gray.shape) <= max_side else 0
            found = self.detector.detect(padded, upsample)
            if not found and self.fallback_detector.name != self.detector.name:
                found = self.fallback_detector.detect(padded, upsample)
        return [Detection(_unscale(d, scale_x, scale_y, offset), d.confidence) for d in found]


def _unscale(detection: Detection, scale_x: float, scale_y: float, offset: int) -> Box:
    box = detection.box
    return Box(
        (box.left - offset) / scale_x,
        (box.top - offset) / scale_y,
        (box.right - offset) / scale_x,
        (box.bottom - offset) / scale_y,
    )


def parse_face_policy(text: str) -> FacePolicy:
    """The face policy a CLI flag or form field names: a policy name or a face index.

    Raises
    ------
    InvalidParameter
        Anything else.
    """
    value = text.strip()
    if value in FACE_POLICY_NAMES:
        return value  # type: ignore[return-value]
    if is_whole_number(value) and len(value) <= 3:
        return int(value)
    raise InvalidParameter(
        "The face policy must be 'dominant', 'single', 'largest', 'crop' or a face index "
        f"such as 0 (faces are numbered largest first). Got {value[:40]!r} instead."
    )


def require_quality(face: Face) -> None:
    """Raise :class:`~facetrust.errors.FaceQualityTooLow` unless ``face`` passed the minimums."""
    if not face.quality.passed:
        raise FaceQualityTooLow(
            "The face does not meet the quality minimums: "
            + "; ".join(face.quality.reasons)
            + ".",
            face,
        )


def select_face(
    faces: Sequence[Face],
    face_policy: FacePolicy,
    *,
    image_size: tuple[int, int] | None = None,
) -> Face:
    """Pick one face from ``faces`` (largest first) according to ``face_policy``.

    ``image_size`` (width, height) lets ``"dominant"`` use its framing rule (the
    one face whose box holds the image centre); without it, only the size rule
    applies. ``"crop"`` cannot pick among detected faces: it is
    :meth:`FacePipeline.detect`'s to handle.

    Raises
    ------
    NoFaceFound
        ``faces`` is empty.
    MultipleFaces
        Several faces and none the policy can pick.
    InvalidParameter
        An unknown policy or an index out of range.
    """
    if not faces:
        raise NoFaceFound(
            "No face was found in the image (failure to acquire). Use a photo in which "
            "the face is visible, frontal and at least about 80 pixels wide; if the image "
            "is already a face crop, say so (face policy 'crop')."
        )
    if isinstance(face_policy, int) and not isinstance(face_policy, bool):
        if not 0 <= face_policy < len(faces):
            raise InvalidParameter(
                f"The face index must be in [0, {len(faces) - 1}] for this image of "
                f"{len(faces)} face(s). Got {face_policy} instead."
            )
        return faces[face_policy]
    if face_policy == "crop":
        raise InvalidParameter(
            "The face policy 'crop' reads the whole image as one face and cannot pick among "
            "detected faces: pass the image to FacePipeline.detect or embed_one with it."
        )
    if face_policy not in ("dominant", "single", "largest"):
        raise InvalidParameter(
            "The 'face_policy' parameter must be 'dominant', 'single', 'largest', 'crop' or "
            f"a face index. Got {face_policy!r} instead."
        )
    if face_policy == "largest" or len(faces) == 1:
        return faces[0]
    if face_policy == "dominant":
        subject = dominant_face(faces, image_size)
        if subject is not None:
            return subject
    raise MultipleFaces(
        f"The image holds {len(faces)} faces and the face policy '{face_policy}' cannot "
        "tell which is meant. Crop it to one person, or choose a face policy: 'largest' "
        "or a face index (0 = largest)."
    )


def dominant_face(
    faces: Sequence[Face], image_size: tuple[int, int] | None = None
) -> Face | None:
    """The subject of a photo of several faces (largest first), or None when it is unclear.

    Two rules, either of which names the subject:

    - size: the largest face's box has at least :data:`DOMINANT_AREA_RATIO`
      times the area of the next (someone in front of a crowd);
    - framing: exactly one face's box holds the centre of the image
      (``image_size``, (width, height)). Photos of a person, and crops made
      around one, are framed on them; people beside or behind them are off
      centre. Two people side by side leave the centre between their faces,
      and a duplicate box on one face makes two boxes hold it: both refused.
    """
    if len(faces) == 1:
        return faces[0]
    if faces[0].box.area >= DOMINANT_AREA_RATIO * faces[1].box.area:
        return faces[0]
    if image_size is not None:
        x, y = image_size[0] / 2, image_size[1] / 2
        framed = [
            f for f in faces if f.box.left <= x <= f.box.right and f.box.top <= y <= f.box.bottom
        ]
        if len(framed) == 1:
            return framed[0]
    return None
