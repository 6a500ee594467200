"""face_recognition 1.3.0's API, same signatures and results, on facetrust's engines.

Migrate with one line::

    import facetrust.compat.face_recognition as face_recognition

The submodules :mod:`.api`, :mod:`.face_recognition_cli` and
:mod:`.face_detection_cli` mirror face_recognition's. Boxes and landmarks
come from the same dlib models; descriptors from the same network run by
ONNX Runtime (equal to dlib's to float rounding, several times faster).
Nothing is compiled: dlib comes from the dlib-bin wheel. The 68-point
landmark model (iBUG 300-W terms, non-commercial use only) is loaded only
when a caller asks for ``model="large"``. See ``docs/compat.md``.
"""

from .api import (
    batch_face_locations,
    compare_faces,
    face_distance,
    face_encodings,
    face_landmarks,
    face_locations,
    load_image_file,
)

__all__ = [
    "batch_face_locations",
    "compare_faces",
    "face_distance",
    "face_encodings",
    "face_landmarks",
    "face_locations",
    "load_image_file",
]
