"""The consented gallery: enrolment, 1:N identification, consent, retention and erasure.

Start with :class:`Gallery` (``Gallery.create`` / ``Gallery.open``) and its
:class:`GalleryConfig`; every method returns one of the frozen result types.
"""

from .config import GalleryConfig, find_config
from .core import FaceInput, Gallery
from .review_desk import CandidateReview, ProbePhoto, ReferencePhoto, ReviewCase, ReviewQueue
from .types import (
    Candidate,
    Consent,
    DuplicateMatch,
    EnrolmentResult,
    ErasureResult,
    Identification,
    KeyRotationResult,
    ReviewStatus,
    Subject,
    SubjectOverview,
    SubjectPage,
    SubjectVerification,
    SweepResult,
    WithdrawalResult,
)

__all__ = [
    "Candidate",
    "CandidateReview",
    "Consent",
    "DuplicateMatch",
    "EnrolmentResult",
    "ErasureResult",
    "FaceInput",
    "Gallery",
    "GalleryConfig",
    "Identification",
    "KeyRotationResult",
    "ProbePhoto",
    "ReferencePhoto",
    "ReviewCase",
    "ReviewQueue",
    "ReviewStatus",
    "Subject",
    "SubjectOverview",
    "SubjectPage",
    "SubjectVerification",
    "SweepResult",
    "WithdrawalResult",
    "find_config",
]
