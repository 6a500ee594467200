"""Settings, read once into a frozen object.

Precedence: explicit argument > CLI flag > ``FACETRUST_*`` environment
variable > default. Each field's environment variable is its name in upper
case with the ``FACETRUST_`` prefix, e.g. ``FACETRUST_MAX_PIXELS``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameter

ENV_PREFIX = "FACETRUST_"


def cores_per_process(processes: int) -> int:
    """Each of ``processes`` processes' share of this machine's cores (at least one).

    The face models' thread count for worker processes that share a machine:
    ONNX Runtime otherwise starts one thread per core in each of them.
    """
    return max(1, (os.cpu_count() or 1) // max(1, processes))


@dataclass(frozen=True)
class Settings:
    """Limits and knobs of the face pipeline.

    Attributes
    ----------
    max_pixels : int
        Largest image accepted, in pixels (width * height). Checked from the
        header before decoding, so decompression bombs are refused cheaply.
    max_bytes : int
        Largest encoded image accepted, in bytes.
    detection_max_side : int
        Detection runs on a grayscale copy scaled so its longer side is at most
        this many pixels; boxes are mapped back to original coordinates. Faces
        narrower than about ``80 * long_side / detection_max_side`` original
        pixels are missed: raise it for small faces in large group photos.
    detection_retry : bool
        When the first pass finds no face, run recovery: the detector again on a
        padded (and, for small images, upsampled) copy, then the fallback (CNN)
        detector, then the whole image confirmed by a detector on its aligned
        chip (see :mod:`facetrust.acquisition`). Photos want it; a gate camera,
        whose empty frames are the norm, does not.
    detector : str
        First detector run on photos (verify, identify, enrol, batch
        enrolment, evaluation): ``"hog"`` (dlib's HOG, the fastest) or
        ``"cnn"`` (dlib's MMOD detector, on ONNX Runtime when installed: finds
        more turned, small and tightly cropped faces, about 5x HOG's time).
        See docs/detectors.md for the measurements behind the defaults.
    fallback_detector : str
        Detector the detection cascade runs on a photo in which ``detector``
        found no face: ``"cnn"`` (default: it costs HOG's time on the photos
        HOG finds and recovers most of the rest), ``"hog"``, or ``"none"``.
    video_detector : str
        Detector for the gate's video frames: ``"hog"`` (default; frames come
        at several per second and most have no new face, so the CNN's cost
        would be paid on every frame) or ``"cnn"``. No fallback on frames.
    min_inter_eye_px : float
        Quality minimum: distance between eye centres in original pixels.
    min_sharpness : float
        Quality minimum: variance of the Laplacian of the 150x150 grayscale chip.
    max_abs_yaw : float
        Quality maximum for the landmark yaw estimate, in [0, 1] (0 frontal).
        0.8 refuses 0.45% of LFW View-2 photos, whose mated pairs fail 2.8
        times as often as the rest (0.6 refused 2.3% for 1.6 times).
    max_abs_roll_deg : float
        Quality maximum for the in-plane rotation of the eye line, in degrees.

    The quality limits were set on LFW View 2 by
    ``benchmarks/study_quality_limits.py``: together they refuse 0.49% of its
    photos (docs/images.md has the table).
    workers : int
        Worker processes for batch work; 0 means one per CPU core.
    embedder : str
        Which engine runs the face descriptor network: ``"auto"`` (ONNX Runtime
        when onnxruntime and onnx are installed, else dlib), ``"onnx"`` or
        ``"dlib"``. Both give the same descriptors (model ``dlib-resnet-v1``).
    embedder_threads : int
        ONNX Runtime threads per process (descriptor network and CNN
        detector); 0 means one per core, or, in
        :func:`facetrust.batch.embed_many` with several workers, the cores
        shared out between them.
    augmentation : str
        Test-time augmentation of each face's descriptor: ``"none"`` (one
        network pass), ``"mirror"`` (the chip and its mirror image averaged,
        two passes) or ``"jitter"`` (six fixed views). Each choice has its
        own model id (``dlib-resnet-v1+mirror``) and operating points;
        templates made with one are never compared with another's. See
        docs/evaluation.md for the accuracy and cost of each.
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 1024 * 1024
    detection_max_side: int = 640
    detection_retry: bool = True
    detector: str = "hog"
    fallback_detector: str = "cnn"
    video_detector: str = "hog"
    min_inter_eye_px: float = 16.0
    min_sharpness: float = 5.0
    max_abs_yaw: float = 0.8
    max_abs_roll_deg: float = 35.0
    workers: int = 0
    embedder: str = "auto"
    embedder_threads: int = 0
    augmentation: str = "none"

    def __post_init__(self) -> None:
        _require_positive(self, "max_pixels", "max_bytes", "detection_max_side")
        for name, allowed in (
            ("detector", ("hog", "cnn")),
            ("fallback_detector", ("cnn", "hog", "none")),
            ("video_detector", ("hog", "cnn")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                choices = ", ".join(f"'{a}'" for a in allowed)
                raise InvalidParameter(
                    f"The '{name}' setting must be one of {choices}. Got {value!r} instead."
                )
        if self.workers < 0:
            raise InvalidParameter(
                f"The 'workers' setting must be 0 (one per core) or more. Got {self.workers}."
            )
        if self.embedder not in ("auto", "onnx", "dlib"):
            raise InvalidParameter(
                "The 'embedder' setting must be 'auto', 'onnx' or 'dlib'. "
                f"Got {self.embedder!r} instead."
            )
        if self.augmentation not in ("none", "mirror", "jitter"):
            raise InvalidParameter(
                "The 'augmentation' setting must be 'none', 'mirror' or 'jitter'. "
                f"Got {self.augmentation!r} instead."
            )
        if self.embedder_threads < 0:
            raise InvalidParameter(
                "The 'embedder_threads' setting must be 0 (one per core) or more. "
                f"Got {self.embedder_threads}."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``FACETRUST_*`` variables, then apply ``overrides``.

        Overrides whose value is ``None`` are ignored, so CLI flags that were
        not given can be passed straight through.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = parse_setting(
                    ENV_PREFIX + field.name.upper(), field.type, raw
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def for_video(self, detection_max_side: int) -> Settings:
        """These settings as the gate reads video frames.

        ``video_detector`` runs first, with no recovery (empty frames are the
        norm at a gate, and the next frame replaces a missed one), on a copy at
        most ``detection_max_side`` pixels long. Every other field (quality
        minimums, engine, augmentation, caps) stays as it is, so the gate's
        templates are those of the photos the gallery enrolled.
        """
        return dataclasses.replace(
            self,
            detector=self.video_detector,
            detection_retry=False,
            detection_max_side=detection_max_side,
        )

    def capped(self, *, max_pixels: int | None = None, max_bytes: int | None = None) -> Settings:
        """These settings with each image cap lowered to the one given where that is
        stricter, never raised.

        The one place where an entry point's own cap (the REST service's pixel and
        body caps) meets the library's (``FACETRUST_MAX_PIXELS``,
        ``FACETRUST_MAX_BYTES``): whichever is lower wins, so an operator who
        lowered either gets that limit everywhere.
        """
        return dataclasses.replace(
            self,
            max_pixels=min(self.max_pixels, max_pixels or self.max_pixels),
            max_bytes=min(self.max_bytes, max_bytes or self.max_bytes),
        )

    @property
    def worker_count(self) -> int:
        """Number of worker processes to use for batch work."""
        return self.workers or (os.cpu_count() or 1)


def parse_setting(variable: str, type_name: Any, raw: str) -> Any:
    """The value of environment ``variable`` (a setting of type ``type_name``) from its text."""
    if str(type_name) == "bool":
        if raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise InvalidParameter(
            f"The environment variable {variable} must be true or false. Got {raw!r} instead."
        )
    wanted = {"int": "a whole number (e.g. 20)", "float": "a finite number (e.g. 2.5)"}
    kind = {"int": int, "float": float, "str": str}.get(str(type_name), str)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        raise InvalidParameter(
            f"The environment variable {variable} must be {wanted[kind.__name__]}. "
            f"Got {raw!r} instead."
        )
    return value


def is_positive(value: float) -> bool:
    """Whether ``value`` is a positive, finite number (NaN and infinity are not)."""
    return math.isfinite(value) and value > 0


def _require_positive(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not is_positive(value):
            raise InvalidParameter(
                f"The '{name}' setting must be a positive number. Got {value} instead."
            )
