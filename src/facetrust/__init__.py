"""facetrust: face recognition with consent, fairness measurement and an audit trail.

Importing the package is cheap: models load on first use.
"""

from .api import default_pipeline, detect_faces, embed_faces, verify
from .batch import ImageResult, embed_many
from .config import Settings
from .errors import FacetrustError
from .faces import Box, EmbeddedFace, Embedding, Face, Landmarks, Quality, QualityCheck
from .images import load_image
from .matching import (
    OperatingPoint,
    Verdict,
    compare,
    face_distance,
    get_operating_point,
    operating_points,
)
from .pipeline import FacePipeline, select_face

__version__ = "0.1.0"

__all__ = [
    "Box",
    "EmbeddedFace",
    "Embedding",
    "Face",
    "FacePipeline",
    "FacetrustError",
    "ImageResult",
    "Landmarks",
    "OperatingPoint",
    "Quality",
    "QualityCheck",
    "Settings",
    "Verdict",
    "compare",
    "default_pipeline",
    "detect_faces",
    "embed_faces",
    "embed_many",
    "face_distance",
    "get_operating_point",
    "load_image",
    "operating_points",
    "select_face",
    "verify",
]
