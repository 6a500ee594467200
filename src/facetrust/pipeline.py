"""Image in, faces and embeddings out.

Detection runs on a downscaled grayscale copy (detection cost grows with
pixels; the landmarks and the descriptor do not need it at full size) and the
boxes are mapped back to original coordinates. Landmarks and the aligned chip
are computed on the full-resolution RGB image, as dlib's models expect.

When the first pass finds nothing, a second pass pads the image (a sliding
window detector misses faces that touch the border, as in passport-style
crops) and, for small images, upsamples it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from .config import Settings
from .errors import FaceQualityTooLow, InvalidParameter, MultipleFaces, NoFaceFound
from .faces import Box, EmbeddedFace, Embedding, Face
from .images import ImageSource, RGBImage, load_image
from .models.base import Detection, Detector, Embedder, Landmarker
from .models.selection import default_embedder, make_detector
from .quality import assess_quality

#: How to pick one face from an image: ``"single"`` refuses images with several
#: faces, ``"largest"`` takes the biggest box, an int takes that index (faces are
#: ordered largest first).
FacePolicy = Literal["single", "largest"] | int

#: Fraction of each side added as a border on the second detection pass.
_PAD_FRACTION = 0.25


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
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        detector: Detector | None = None,
        landmarker: Landmarker | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        from .models import dlib_backend

        self.settings = settings or Settings.from_env()
        self.detector: Detector = detector or make_detector(self.settings.detector, self.settings)
        self.landmarker: Landmarker = landmarker or dlib_backend.DlibLandmarker()
        self.embedder: Embedder = embedder or default_embedder(self.settings)

    @property
    def model_id(self) -> str:
        """Id of the embedding model, stored with every template."""
        return self.embedder.model_id

    def detect(self, image: ImageSource) -> list[Face]:
        """All faces in ``image``, largest first, each with landmarks, chip and quality.

        Returns an empty list when no face is found.
        """
        return self.faces_in_pixels(load_image(image, self.settings))

    def embed(self, image: ImageSource) -> list[EmbeddedFace]:
        """Every face in ``image`` with its embedding, largest first."""
        faces = self.detect(image)
        return self._embed_faces(faces)

    def embed_one(
        self,
        image: ImageSource,
        face_policy: FacePolicy = "single",
        *,
        check_quality: bool = True,
    ) -> EmbeddedFace:
        """The embedding of the one face ``face_policy`` picks.

        Raises
        ------
        NoFaceFound
            No face was detected (failure to acquire).
        MultipleFaces
            Several faces and ``face_policy="single"``.
        FaceQualityTooLow
            ``check_quality`` and the chosen face fails the quality minimums.
        """
        face = select_face(self.detect(image), face_policy)
        if check_quality and not face.quality.passed:
            raise FaceQualityTooLow(
                "The face does not meet the quality minimums: "
                + "; ".join(face.quality.reasons)
                + ".",
                face,
            )
        return self._embed_faces([face])[0]

    def _embed_faces(self, faces: Sequence[Face]) -> list[EmbeddedFace]:
        chips = [f.chip for f in faces if f.chip is not None]
        vectors = self.embedder.embed(chips)
        return [
            EmbeddedFace(face, Embedding(vector, self.model_id))
            for face, vector in zip(faces, vectors, strict=True)
        ]

    def faces_in_pixels(self, pixels: RGBImage) -> list[Face]:
        """All faces in already decoded pixels (shape (h, w, 3), uint8 RGB), largest first."""
        detections = self._detect_boxes(pixels)
        faces = []
        for detection in detections:
            landmarks = self.landmarker.locate(pixels, detection.box)
            chip = self.landmarker.align(
                pixels,
                detection.box,
                landmarks,
                self.embedder.chip_size,
                self.embedder.chip_padding,
            )
            quality = assess_quality(landmarks, chip, self.settings)
            faces.append(Face(detection.box, detection.confidence, landmarks, quality, chip))
        faces.sort(key=lambda f: f.box.area, reverse=True)
        return faces

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
            offset = round(_PAD_FRACTION * max(gray.shape))
            fill = int(gray.mean())
            padded = np.asarray(
                cv2.copyMakeBorder(
                    gray, offset, offset, offset, offset, cv2.BORDER_CONSTANT, value=fill
                ),
                dtype=np.uint8,
            )
            upsample = 1 if 2 * max(gray.shape) <= max_side else 0
            found = self.detector.detect(padded, upsample)
        return [Detection(_unscale(d, scale_x, scale_y, offset), d.confidence) for d in found]


def _unscale(detection: Detection, scale_x: float, scale_y: float, offset: int) -> Box:
    box = detection.box
    return Box(
        (box.left - offset) / scale_x,
        (box.top - offset) / scale_y,
        (box.right - offset) / scale_x,
        (box.bottom - offset) / scale_y,
    )


def select_face(faces: Sequence[Face], face_policy: FacePolicy) -> Face:
    """Pick one face from ``faces`` (largest first) according to ``face_policy``."""
    if not faces:
        raise NoFaceFound(
            "No face was found in the image (failure to acquire). Use a photo in which "
            "the face is visible, frontal and at least about 80 pixels wide."
        )
    if face_policy == "largest":
        return faces[0]
    if face_policy == "single":
        if len(faces) > 1:
            raise MultipleFaces(
                f"The image holds {len(faces)} faces; expected exactly one. Crop it to one "
                "person, or choose a face policy: 'largest' or a face index (0 = largest)."
            )
        return faces[0]
    if isinstance(face_policy, int) and not isinstance(face_policy, bool):
        if not 0 <= face_policy < len(faces):
            raise InvalidParameter(
                f"The face index must be in [0, {len(faces) - 1}] for this image of "
                f"{len(faces)} face(s). Got {face_policy} instead."
            )
        return faces[face_policy]
    raise InvalidParameter(
        "The 'face_policy' parameter must be 'single', 'largest' or a face index. "
        f"Got {face_policy!r} instead."
    )
