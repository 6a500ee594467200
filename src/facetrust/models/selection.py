"""Choosing the engines that run the face detector and the face descriptor network."""

from __future__ import annotations

from ..config import Settings
from ..errors import InvalidParameter, ModelError
from .base import Detector, Embedder

#: Detector names a setting may hold (:attr:`~facetrust.config.Settings.detector` and the
#: per-use detector settings).
DETECTOR_NAMES = ("hog", "cnn")


def default_embedder(settings: Settings | None = None) -> Embedder:
    """The descriptor backend ``settings.embedder`` asks for.

    ``"auto"`` (the default) picks ONNX Runtime when onnxruntime and onnx are
    installed (several times faster, same descriptors) and dlib otherwise;
    ``"onnx"`` and ``"dlib"`` force one. ``settings.augmentation`` other than
    ``"none"`` wraps it in an
    :class:`~facetrust.models.augmentation.AugmentedEmbedder` (its own model
    id). Nothing is loaded until the first
    :meth:`~facetrust.models.base.Embedder.embed` call.

    Raises
    ------
    ModelError
        ``"onnx"`` was asked for but onnxruntime or onnx is not installed.
    """
    from .augmentation import AugmentedEmbedder
    from .dlib_backend import DlibResnetEmbedder
    from .onnx_backend import OnnxResnetEmbedder, onnxruntime_available

    settings = settings or Settings.from_env()
    choice = settings.embedder
    if choice == "auto":
        choice = "onnx" if onnxruntime_available() else "dlib"
    base: Embedder
    if choice == "dlib":
        base = DlibResnetEmbedder()
    elif not onnxruntime_available():
        raise ModelError(
            "The 'onnx' embedder needs onnxruntime and onnx. Install them with "
            "pip install onnxruntime onnx, or set FACETRUST_EMBEDDER=dlib."
        )
    else:
        base = OnnxResnetEmbedder(threads=settings.embedder_threads)
    if settings.augmentation == "none":
        return base
    return AugmentedEmbedder(base, settings.augmentation)


def embedder_model_id(settings: Settings | None = None) -> str:
    """The model id of the descriptors :func:`default_embedder` gives, without loading it.

    ``dlib-resnet-v1`` (both engines), or ``dlib-resnet-v1+<augmentation>``
    when ``settings.augmentation`` is not ``"none"``. Caches and operating
    points key on it.
    """
    from .augmentation import augmented_model_id
    from .dlib_backend import DLIB_RESNET_MODEL_ID

    settings = settings or Settings.from_env()
    return augmented_model_id(DLIB_RESNET_MODEL_ID, settings.augmentation)


def make_detector(name: str, settings: Settings | None = None) -> Detector:
    """The face detector called ``name``: ``"hog"`` or ``"cnn"``.

    ``"hog"`` is dlib's HOG + linear SVM frontal detector. ``"cnn"`` is
    dlib's MMOD CNN detector: its network runs on ONNX Runtime when
    onnxruntime and onnx are installed (same boxes, about ten times faster,
    :class:`~facetrust.models.mmod_onnx.OnnxMmodDetector`) and on dlib
    otherwise. ONNX Runtime uses ``settings.embedder_threads`` threads (0:
    one per core). Nothing is loaded until the first ``detect`` call.

    Raises
    ------
    InvalidParameter
        ``name`` is not a detector name.
    """
    from .dlib_backend import CnnDetector, HogDetector
    from .mmod_onnx import OnnxMmodDetector
    from .onnx_backend import onnxruntime_available

    if name == "hog":
        return HogDetector()
    if name != "cnn":
        raise InvalidParameter(
            f"The detector name must be one of {', '.join(DETECTOR_NAMES)}. Got {name!r} instead."
        )
    if not onnxruntime_available():
        return CnnDetector()
    settings = settings or Settings.from_env()
    return OnnxMmodDetector(threads=settings.embedder_threads or None)
