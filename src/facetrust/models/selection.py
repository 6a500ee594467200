"""Choosing the engine that runs the face descriptor network."""

from __future__ import annotations

from ..config import Settings
from ..errors import ModelError
from .base import Embedder


def default_embedder(settings: Settings | None = None) -> Embedder:
    """The descriptor backend ``settings.embedder`` asks for.

    ``"auto"`` (the default) picks ONNX Runtime when onnxruntime and onnx are
    installed (several times faster, same descriptors) and dlib otherwise;
    ``"onnx"`` and ``"dlib"`` force one. Nothing is loaded until the first
    :meth:`~facetrust.models.base.Embedder.embed` call.

    Raises
    ------
    ModelError
        ``"onnx"`` was asked for but onnxruntime or onnx is not installed.
    """
    from .dlib_backend import DlibResnetEmbedder
    from .onnx_backend import OnnxResnetEmbedder, onnxruntime_available

    settings = settings or Settings.from_env()
    choice = settings.embedder
    if choice == "auto":
        choice = "onnx" if onnxruntime_available() else "dlib"
    if choice == "dlib":
        return DlibResnetEmbedder()
    if not onnxruntime_available():
        raise ModelError(
            "The 'onnx' embedder needs onnxruntime and onnx. Install them with "
            "pip install onnxruntime onnx, or set FACETRUST_EMBEDDER=dlib."
        )
    return OnnxResnetEmbedder(threads=settings.embedder_threads)
