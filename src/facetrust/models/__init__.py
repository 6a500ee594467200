"""Face model backends behind three small interfaces.

:class:`~facetrust.models.base.Detector` finds face boxes,
:class:`~facetrust.models.base.Landmarker` places landmarks and cuts the
aligned chip, :class:`~facetrust.models.base.Embedder` turns chips into
descriptors. The dlib backend (weights from the ``face_recognition_models``
package) is the default; another backend only has to implement these.
The descriptor network also runs on ONNX Runtime
(:mod:`~facetrust.models.onnx_backend`, converted from dlib's weights on
first use), chosen by :func:`~facetrust.models.selection.default_embedder`
when installed, and so does dlib's CNN face detector
(:mod:`~facetrust.models.mmod_onnx`, the same boxes, chosen by
:func:`~facetrust.models.selection.make_detector` for ``"cnn"``).
:mod:`~facetrust.models.augmentation` wraps an embedder to average each
descriptor over fixed views of the chip (test-time augmentation, its own
model id).
"""

from .base import Detection, Detector, Embedder, Landmarker

__all__ = ["Detection", "Detector", "Embedder", "Landmarker"]
