"""face_recognition 1.3.0's ``api`` module, on facetrust's engines.

Every function has face_recognition's name, signature, defaults, return
types and coordinate convention: boxes are ``(top, right, bottom, left)``
tuples of ints, trimmed to the image, and encodings are float64 arrays of
shape (128,). The HOG detector and the landmark predictors are dlib's own, so
boxes and points are identical. The CNN detector's network runs on ONNX
Runtime with dlib's own pre- and post-processing (:mod:`facetrust.models.mmod_onnx`), so
its boxes are dlib's too; descriptors come from the same network run by ONNX
Runtime and differ from dlib's by float rounding only (under 1e-6).
``num_jitters`` above 1, images that are not contiguous uint8 arrays and
tiny images go to dlib's own models, so they give what face_recognition
gives, errors included.

What differs, on purpose: models load on first use rather than at import
(the 68-point landmark model, under the iBUG 300-W non-commercial terms, only
when a caller asks for ``model="large"``), and truncated image files are
accepted by :func:`load_image_file` without changing Pillow's process-wide
``LOAD_TRUNCATED_IMAGES`` (a JPEG; a file of another format, only while it loads).

Model objects face_recognition exposes as module attributes
(``face_detector``, ``cnn_face_detector``, ``pose_predictor_68_point``,
``pose_predictor_5_point``, ``face_encoder``) and the paths of their weight
files (``predictor_68_point_model``, ``predictor_5_point_model``,
``cnn_face_detection_model``, ``face_recognition_model``) are here too,
loaded when first read.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import PIL.Image
from PIL import ImageFile

from ...models.dlib_backend import model_path
from ...models.mmod_onnx import MIN_SIDE
from . import engines

#: A face box as face_recognition gives it: (top, right, bottom, left) in pixels.
CssBox = tuple[int, int, int, int]

#: Any image face_recognition accepts: uint8 arrays of shape (h, w, 3) RGB or (h, w) gray.
ImageArray = npt.NDArray[Any]

_TRUNCATED_IMAGES_LOCK = threading.Lock()

#: Smaller images go to dlib's own CNN, which refuses some of them with its own error.
_CNN_MIN_SIDE = MIN_SIDE

_MODEL_OBJECTS: dict[str, Callable[[], Any]] = {
    "face_detector": engines.hog_detector,
    "cnn_face_detector": engines.cnn_detector,
    "pose_predictor_68_point": lambda: engines.shape_predictor("large"),
    "pose_predictor_5_point": lambda: engines.shape_predictor("small"),
    "face_encoder": engines.dlib_encoder,
}

_MODEL_PATHS = {
    "predictor_68_point_model": "landmarks68",
    "predictor_5_point_model": "landmarks5",
    "cnn_face_detection_model": "mmod",
    "face_recognition_model": "resnet",
}


def __getattr__(name: str) -> Any:
    if name in _MODEL_OBJECTS:
        return _MODEL_OBJECTS[name]()
    if name in _MODEL_PATHS:
        return str(model_path(_MODEL_PATHS[name]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rect_to_css(rect: Any) -> CssBox:
    """A dlib rectangle as a (top, right, bottom, left) tuple."""
    return rect.top(), rect.right(), rect.bottom(), rect.left()


def _css_to_rect(css: Sequence[int]) -> Any:
    """A (top, right, bottom, left) tuple as a dlib rectangle."""
    top, right, bottom, left = css[0], css[1], css[2], css[3]
    return engines.dlib_module().rectangle(left, top, right, bottom)


def _trim_css_to_bounds(css: Sequence[int], image_shape: Sequence[int]) -> CssBox:
    """``css`` clipped to an image of ``image_shape`` (rows, columns, ...)."""
    top, right, bottom, left = css[0], css[1], css[2], css[3]
    return max(top, 0), min(right, image_shape[1]), min(bottom, image_shape[0]), max(left, 0)


def face_distance(
    face_encodings: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    face_to_compare: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """Euclidean distance from each of ``face_encodings`` to ``face_to_compare``.

    Lower is more alike; 0.6 is the threshold dlib's network was trained for.

    Parameters
    ----------
    face_encodings : sequence of arrays of shape (128,), or array of shape (n, 128)
    face_to_compare : array of shape (128,)

    Returns
    -------
    numpy.ndarray of shape (n,)
        In the order of ``face_encodings``; empty when ``face_encodings`` is.
    """
    if len(face_encodings) == 0:
        return np.empty(0)
    differences = np.asarray(face_encodings) - np.asarray(face_to_compare)
    distances: npt.NDArray[np.float64] = np.linalg.norm(differences, axis=1)
    return distances


def load_image_file(file: str | os.PathLike[str] | IO[bytes], mode: str = "RGB") -> ImageArray:
    """Decode an image file (JPEG, PNG, ...) into a numpy array.

    Parameters
    ----------
    file : str, path or binary file object
    mode : str, default "RGB"
        PIL mode to convert to: ``"RGB"`` gives uint8 (h, w, 3), ``"L"`` gives
        uint8 (h, w) grayscale; an empty value keeps the file's own mode.

    Returns
    -------
    numpy.ndarray
        No EXIF rotation is applied (as in face_recognition).

    Raises
    ------
    FileNotFoundError, PIL.UnidentifiedImageError
        As PIL raises them for a missing file or one that is not an image.
    """
    # face_recognition sets Pillow's LOAD_TRUNCATED_IMAGES for the whole process at
    # import, so that a truncated file decodes with its missing part filled in.
    if isinstance(file, str | os.PathLike):
        with open(file, "rb") as handle:
            data = handle.read()
    else:
        data = file.read()
    image = _open_image(data, file)
    try:
        image.load()
    except OSError:  # cut short (not a JPEG), or damaged: as face_recognition reads it
        image = _load_truncated_under_flag(data, file)
    if mode:
        image = image.convert(mode)
    return np.array(image)


#: A JPEG's start-of-image and end-of-image markers.
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _open_image(data: bytes, file: object) -> PIL.Image.Image:
    """``data`` opened by Pillow, as face_recognition's ``PIL.Image.open(file)`` would.

    A JPEG gets an end-of-image marker after its end: a truncated one then decodes
    as Pillow decodes it under LOAD_TRUNCATED_IMAGES (which adds that marker
    where the file ends), without setting that process-wide flag; a complete
    one ignores what follows its own marker.
    """
    if data.startswith(_JPEG_START):
        data += _JPEG_END
    try:
        return PIL.Image.open(io.BytesIO(data))
    except PIL.UnidentifiedImageError:
        name = os.fspath(file) if isinstance(file, str | os.PathLike) else file
        raise PIL.UnidentifiedImageError(f"cannot identify image file {name!r}") from None


def _load_truncated_under_flag(data: bytes, file: object) -> PIL.Image.Image:
    """A truncated image of another format than JPEG (PNG, GIF, BMP, ...), or a damaged
    one, loaded as face_recognition loads it: Pillow offers no per-image way, so under
    its process-wide flag, set only meanwhile (facetrust's own decoder does not depend
    on it: :mod:`facetrust.images` tells a truncated file by itself)."""
    with _TRUNCATED_IMAGES_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image = _open_image(data, file)
            image.load()
            return image
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _raw_face_locations(
    img: ImageArray, number_of_times_to_upsample: int = 1, model: str = "hog"
) -> Any:
    """Raw detections: dlib ``rectangles`` for ``"hog"``, a list of CNN detections for ``"cnn"``.

    Each rectangle has ``top()``, ``right()``, ``bottom()``, ``left()``; each
    CNN detection has ``.rect`` (a dlib rectangle) and ``.confidence``, as
    dlib's ``mmod_rectangle`` has.
    """
    if model == "cnn":
        fast = engines.onnx_cnn_detector()
        if fast is not None and _fits_cnn([img], number_of_times_to_upsample):
            return fast(img, number_of_times_to_upsample)
        return engines.cnn_detector()(img, number_of_times_to_upsample)
    return engines.hog_detector()(img, number_of_times_to_upsample)


def face_locations(
    img: ImageArray, number_of_times_to_upsample: int = 1, model: str = "hog"
) -> list[CssBox]:
    """Boxes of the faces in ``img``.

    Parameters
    ----------
    img : numpy.ndarray
        uint8 RGB (h, w, 3) or grayscale (h, w).
    number_of_times_to_upsample : int, default 1
        How many times the image is doubled before detection; higher finds
        smaller faces and costs about four times more per step.
    model : {"hog", "cnn"}, default "hog"
        ``"hog"`` is fast on a CPU; ``"cnn"`` (dlib's MMOD network) finds more
        turned and small faces but is slower. Any other value means
        ``"hog"``, as in face_recognition.

    Returns
    -------
    list of (top, right, bottom, left) tuples of int
        Clipped to the image.
    """
    found = _raw_face_locations(img, number_of_times_to_upsample, model)
    if model == "cnn":
        return [_trim_css_to_bounds(_rect_to_css(face.rect), img.shape) for face in found]
    return [_trim_css_to_bounds(_rect_to_css(face), img.shape) for face in found]


def _raw_face_locations_batched(
    images: Sequence[ImageArray], number_of_times_to_upsample: int = 1, batch_size: int = 128
) -> Any:
    """dlib's CNN detections for each image of ``images`` (all of one size)."""
    fast = engines.onnx_cnn_detector()
    if fast is not None and _fits_cnn(images, number_of_times_to_upsample):
        return fast(list(images), number_of_times_to_upsample, batch_size=batch_size)
    return engines.cnn_detector()(images, number_of_times_to_upsample, batch_size=batch_size)


def _fits_cnn(images: Any, upsample: Any) -> bool:
    # What the ONNX network computes as dlib does: a non-empty list of uint8 gray or
    # RGB arrays of one size, big enough for the network's windows. Anything else
    # goes to dlib, which gives its own result or error.
    if not isinstance(images, list | tuple) or not images:
        return False
    if not isinstance(upsample, int) or isinstance(upsample, bool) or upsample < 0:
        return False
    shape = getattr(images[0], "shape", (0,))[:2]
    return all(
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
        and image.flags.c_contiguous
        and image.shape[:2] == shape
        and min(shape) >= _CNN_MIN_SIDE
        for image in images
    )


def batch_face_locations(
    images: Sequence[ImageArray], number_of_times_to_upsample: int = 1, batch_size: int = 128
) -> list[list[CssBox]]:
    """CNN face boxes for several images of the same size, in batches.

    All images must have the same size. On a CPU a batch costs what one call
    per image costs.

    Returns
    -------
    list of lists of (top, right, bottom, left) tuples
        One list per image, clipped to the size of ``images[0]``.
    """
    batched = _raw_face_locations_batched(images, number_of_times_to_upsample, batch_size)
    shape = images[0].shape if len(images) else (0, 0)
    return [
        [_trim_css_to_bounds(_rect_to_css(face.rect), shape) for face in detections]
        for detections in batched
    ]


def _raw_face_landmarks(
    face_image: ImageArray,
    face_locations: Sequence[Sequence[int]] | None = None,
    model: str = "large",
) -> list[Any]:
    """dlib ``full_object_detection`` shapes, one per face (68 points, or 5 for ``"small"``).

    Faces are found with the HOG detector when ``face_locations`` is None.
    """
    if face_locations is None:
        rects = list(_raw_face_locations(face_image))
    else:
        rects = [_css_to_rect(location) for location in face_locations]
    predictor = engines.shape_predictor("small" if model == "small" else "large")
    return [predictor(face_image, rect) for rect in rects]


def face_landmarks(
    face_image: ImageArray,
    face_locations: Sequence[Sequence[int]] | None = None,
    model: str = "large",
) -> list[dict[str, list[tuple[int, int]]]]:
    """Named landmark points of each face.

    Parameters
    ----------
    face_image : numpy.ndarray
    face_locations : list of (top, right, bottom, left), optional
        Faces to place landmarks in; found with the HOG detector when omitted.
    model : {"large", "small"}, default "large"
        ``"large"`` is dlib's 68-point model (trained on iBUG 300-W, whose
        terms allow non-commercial use only; loaded on this first request);
        ``"small"`` is the 5-point model, faster and licensed for any use.

    Returns
    -------
    list of dict
        ``"large"``: ``chin``, ``left_eyebrow``, ``right_eyebrow``,
        ``nose_bridge``, ``nose_tip``, ``left_eye``, ``right_eye``,
        ``top_lip``, ``bottom_lip``; ``"small"``: ``nose_tip``, ``left_eye``,
        ``right_eye``. Each value is a list of (x, y) int tuples.

    Raises
    ------
    ValueError
        ``model`` is neither ``"large"`` nor ``"small"``.
    """
    if model not in ("large", "small"):
        raise ValueError("Invalid landmarks model type. Supported models are ['small', 'large'].")
    shapes = _raw_face_landmarks(face_image, face_locations, model)
    points = [[(p.x, p.y) for p in shape.parts()] for shape in shapes]
    if model == "small":
        return [{"nose_tip": [p[4]], "left_eye": p[2:4], "right_eye": p[0:2]} for p in points]
    return [_named_68_points(p) for p in points]


def _named_68_points(p: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
    # The lips run round the outer contour, then back along the inner one.
    return {
        "chin": p[0:17],
        "left_eyebrow": p[17:22],
        "right_eyebrow": p[22:27],
        "nose_bridge": p[27:31],
        "nose_tip": p[31:36],
        "left_eye": p[36:42],
        "right_eye": p[42:48],
        "top_lip": p[48:55] + [p[64], p[63], p[62], p[61], p[60]],
        "bottom_lip": p[54:60] + [p[48], p[60], p[67], p[66], p[65], p[64]],
    }


def face_encodings(
    face_image: ImageArray,
    known_face_locations: Sequence[Sequence[int]] | None = None,
    num_jitters: int = 1,
    model: str = "small",
) -> list[npt.NDArray[np.float64]]:
    """The 128-d descriptor of each face in ``face_image``.

    Parameters
    ----------
    face_image : numpy.ndarray
        uint8 RGB of shape (h, w, 3).
    known_face_locations : list of (top, right, bottom, left), optional
        The faces to encode; found with the HOG detector (upsampled once) when
        omitted. Passing the boxes you already have saves a detection.
    num_jitters : int, default 1
        Above 1, each face is re-sampled that many times with random jitter
        and the descriptors averaged (dlib's encoder runs these, about
        ``num_jitters`` times slower).
    model : {"small", "large"}, default "small"
        Landmarks used to align the face: 5 points, or 68 points (iBUG 300-W
        terms, non-commercial).

    Returns
    -------
    list of numpy.ndarray of shape (128,), float64
        One per face, in the order of the faces; compare them with
        :func:`face_distance` (lower is more alike).
    """
    shapes = _raw_face_landmarks(face_image, known_face_locations, model)
    if not shapes:
        return []
    if not _fits_embedder(face_image, num_jitters):
        encoder = engines.dlib_encoder()
        return [
            np.array(encoder.compute_face_descriptor(face_image, shape, num_jitters))
            for shape in shapes
        ]
    embedder = engines.embedder()
    dlib = engines.dlib_module()
    chips = [
        dlib.get_face_chip(face_image, shape, embedder.chip_size, embedder.chip_padding)
        for shape in shapes
    ]
    return [np.asarray(vector, dtype=np.float64) for vector in embedder.embed(chips)]


def _fits_embedder(face_image: Any, num_jitters: Any) -> bool:
    # What dlib's encoder computes without jitter, on an image the chip cutter
    # reads as dlib does; anything else is left to dlib, errors included.
    return (
        isinstance(num_jitters, int)
        and num_jitters <= 1
        and isinstance(face_image, np.ndarray)
        and face_image.dtype == np.uint8
        and face_image.ndim == 3
        and face_image.shape[2] == 3
        and face_image.flags.c_contiguous
    )


def compare_faces(
    known_face_encodings: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    face_encoding_to_check: npt.ArrayLike,
    tolerance: float = 0.6,
) -> list[bool]:
    """Whether each known encoding is within ``tolerance`` of ``face_encoding_to_check``.

    Parameters
    ----------
    tolerance : float, default 0.6
        Largest distance that counts as a match; lower is more strict.

    Returns
    -------
    list of bool
        In the order of ``known_face_encodings``.

    Notes
    -----
    A loop of ``compare_faces`` over a list of known people is a 1:N search
    without consent records or an audit trail; ``docs/compat.md`` shows the
    same thing done with a consented :class:`facetrust.gallery.Gallery`.
    """
    return list(face_distance(known_face_encodings, face_encoding_to_check) <= tolerance)
