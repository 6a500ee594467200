"""Settings, read once into a frozen object.

Precedence: explicit argument > CLI flag > ``FACETRUST_*`` environment
variable > default. Each field's environment variable is its name in upper
case with the ``FACETRUST_`` prefix, e.g. ``FACETRUST_MAX_PIXELS``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameter

ENV_PREFIX = "FACETRUST_"


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
        ``"hog"`` (fast, CPU) or ``"cnn"`` (dlib's MMOD detector: slower, finds
        more rotated and small faces).
    min_inter_eye_px : float
        Quality minimum: distance between eye centres in original pixels.
    min_sharpness : float
        Quality minimum: variance of the Laplacian of the 150x150 grayscale chip.
    max_abs_yaw : float
        Quality maximum for the landmark yaw estimate, in [0, 1] (0 frontal).
    max_abs_roll_deg : float
        Quality maximum for the in-plane rotation of the eye line, in degrees.
    workers : int
        Worker processes for batch work; 0 means one per CPU core.
    embedder : str
        Which engine runs the face descriptor network: ``"auto"`` (ONNX Runtime
        when onnxruntime and onnx are installed, else dlib), ``"onnx"`` or
        ``"dlib"``. Both give the same descriptors (model ``dlib-resnet-v1``).
    embedder_threads : int
        ONNX Runtime threads per process; 0 means one per core, or, in
        :func:`facetrust.batch.embed_many` with several workers, the cores
        shared out between them.
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 1024 * 1024
    detection_max_side: int = 640
    detection_retry: bool = True
    detector: str = "hog"
    min_inter_eye_px: float = 16.0
    min_sharpness: float = 5.0
    max_abs_yaw: float = 0.6
    max_abs_roll_deg: float = 35.0
    workers: int = 0
    embedder: str = "auto"
    embedder_threads: int = 0

    def __post_init__(self) -> None:
        _require_positive(self, "max_pixels", "max_bytes", "detection_max_side")
        if self.detector not in ("hog", "cnn"):
            raise InvalidParameter(
                f"The 'detector' setting must be 'hog' or 'cnn'. Got {self.detector!r} instead."
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
                values[field.name] = parse_setting(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def worker_count(self) -> int:
        """Number of worker processes to use for batch work."""
        return self.workers or (os.cpu_count() or 1)


def parse_setting(name: str, type_name: Any, raw: str) -> Any:
    """The value of setting ``name`` of type ``type_name`` from its text ``raw`` (an env var)."""
    if str(type_name) == "bool":
        if raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise InvalidParameter(
            f"The environment variable {ENV_PREFIX}{name.upper()} must be true or false. "
            f"Got {raw!r} instead."
        )
    kind = {"int": int, "float": float, "str": str}.get(str(type_name), str)
    try:
        return kind(raw)
    except ValueError:
        raise InvalidParameter(
            f"The environment variable {ENV_PREFIX}{name.upper()} must be of type {kind.__name__}. "
            f"Got {raw!r} instead."
        ) from None


def _require_positive(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value <= 0:
            raise InvalidParameter(
                f"The '{name}' setting must be a positive number. Got {value} instead."
            )
