"""Embedding cache: what the face pipeline makes of an image file, once per model, in SQLite.

By default the cache holds the product's decision on each image, as
``verify``, ``identify`` and ``enroll`` would make it: the one face the
default face policy (:data:`facetrust.pipeline.DEFAULT_FACE_POLICY`) picks, or
the refusal (no face, several faces, below the quality minimums), so that an
evaluation measures the pipeline users run. With ``face_policy=None`` it holds
every face found instead, for studies of detection and face choice.

Key: ``(sha256 of the file's bytes, model id, pipeline variant)``. The variant
(:func:`pipeline_variant`) holds the face policy, every :class:`Settings` field
except the few listed in :data:`SETTINGS_NOT_IN_KEY` (detectors, detection
size, recovery, pixel and byte caps, quality limits, engine, augmentation), and
:func:`pipeline_version`, a digest of the pipeline's source, the model weights
and the libraries that run them. A cache filled under one variant is never
read for another, so a change of code, weights or settings recomputes. A file
that gave no face, was refused, or could not be read is stored too (failure to
acquire), so a re-run does not retry it; a refusal for a size cap is keyed on
that cap like everything else.

The default location is ``embeddings.sqlite`` in the user cache directory
(``~/.cache/facetrust`` on Linux, via platformdirs); ``FACETRUST_CACHE_DIR``
or the ``path`` argument overrides it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..batch import ImageResult, embed_many
from ..config import Settings
from ..errors import StoreError
from ..faces import Box
from ..models.dlib_backend import model_path
from ..models.onnx_backend import onnxruntime_available, weights_sha256
from ..models.selection import embedder_model_id
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy

#: Signature of the function that embeds images the cache lacks; ``embed_many`` by default.
#: Called as ``compute(paths, settings, workers=..., progress=...)``.
ComputeFunction = Callable[..., Iterable[ImageResult]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    faces TEXT NOT NULL,
    vectors BLOB NOT NULL,
    error_type TEXT,
    error TEXT,
    created TEXT NOT NULL,
    PRIMARY KEY (sha256, model_id, variant)
)
"""

#: Rows written per transaction while filling, so an interrupted run keeps its work.
_COMMIT_EVERY = 64


@dataclass(frozen=True, eq=False)
class CachedFace:
    """One face of a cached image: where it is and its descriptor.

    Attributes
    ----------
    box : Box
        Detector box in original-image pixels.
    confidence : float
        Detector score (higher is more face-like).
    vector : ndarray of shape (dim,), float32
        The embedding; compare with Euclidean distance (lower is more similar).
    """

    box: Box
    confidence: float
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class CachedImage:
    """What the pipeline found in one image file.

    Attributes
    ----------
    sha256 : str
        Hex digest of the file's bytes.
    width, height : int
        Image size in pixels (0 when the file could not be read).
    faces : tuple of CachedFace
        Every face found, largest first (under a face policy, the one it
        picked); empty when none was.
    error_type, error : str or None
        Name and message of the error that stopped the image: an unreadable
        file, or under a face policy the pipeline's refusal (``NoFaceFound``,
        ``MultipleFaces``, ``FaceQualityTooLow``; the face is kept for the
        latter). ``None`` when the image was accepted (and, without a face
        policy, when no face was found).
    """

    sha256: str
    width: int
    height: int
    faces: tuple[CachedFace, ...]
    error_type: str | None = None
    error: str | None = None

    @property
    def acquired(self) -> bool:
        """True when a face was found and not refused (not a failure to acquire)."""
        return bool(self.faces) and self.error_type is None

    def subject_face(self) -> CachedFace | None:
        """The face an evaluation uses; ``None`` on failure to acquire.

        Under a face policy, the face the pipeline picked. Without one (every
        face cached), the face nearest the image centre: LFW photos are
        cropped around the named person. Ties go to the larger face (faces
        are largest first).
        """
        if not self.acquired:
            return None
        if len(self.faces) == 1:
            return self.faces[0]
        cx, cy = self.width / 2, self.height / 2

        def offset(face: CachedFace) -> float:
            fx = (face.box.left + face.box.right) / 2
            fy = (face.box.top + face.box.bottom) / 2
            return float(np.hypot(fx - cx, fy - cy))

        return min(self.faces, key=offset)  # min is stable: ties keep the larger face


def default_cache_path() -> Path:
    """``$FACETRUST_CACHE_DIR/embeddings.sqlite``, else the platform's user cache directory."""
    from platformdirs import user_cache_dir

    root = os.environ.get("FACETRUST_CACHE_DIR") or user_cache_dir("facetrust")
    return Path(root) / "embeddings.sqlite"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The :class:`Settings` fields left out of the cache key, each with why it cannot
#: change a face, an embedding or a refusal of a photo. Every other field is in the
#: key, so a setting added later is keyed on until it is shown here not to matter.
SETTINGS_NOT_IN_KEY = {
    "workers": "how many processes share the images; each runs the same pipeline on its own",
    "embedder_threads": (
        "ONNX Runtime threads per process: boxes and descriptors are the same bit for bit "
        "with 1, 2 and all cores (tests/evaluation/test_cache_key.py checks it)"
    ),
    "video_detector": "read only for the gate's video frames, never for a photo",
}

#: The modules whose code decides what the photo pipeline makes of an image (a name
#: ending in ``/`` is a package: every module in it). :func:`pipeline_version` digests
#: their source; tests/evaluation/test_cache_key.py checks that every facetrust module
#: they import is listed.
PIPELINE_SOURCES = (
    "acquisition.py", "batch.py", "config.py", "errors.py", "faces.py", "images.py",
    "models/", "pipeline.py", "quality.py", "text.py",
)

#: The weight files the photo pipeline loads (``face_recognition_models`` names).
PIPELINE_WEIGHTS = ("landmarks5", "resnet", "mmod")

#: Libraries that decode, resize, detect and embed, by their distribution names
#: (alternatives in order: dlib ships as ``dlib-bin`` or ``dlib``).
PIPELINE_LIBRARIES = (
    ("numpy",), ("pillow",), ("opencv-python-headless", "opencv-python"),
    ("dlib-bin", "dlib"), ("onnxruntime",), ("onnx",),
)


def pipeline_version() -> str:
    """A short digest of what, besides the settings, decides the pipeline's outcome.

    Covers the source of the pipeline's modules (:data:`PIPELINE_SOURCES`),
    the sha256 of the model weights it loads (:data:`PIPELINE_WEIGHTS`), the
    versions of the libraries that run them (:data:`PIPELINE_LIBRARIES`) and
    whether ONNX Runtime runs the networks (it does when installed) or dlib.
    Any change to one of these gives another digest (16 hex characters), so
    the evaluation cache never serves results of another pipeline.

    Raises
    ------
    ModelError
        The model weights are not installed or cannot be read.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for name in PIPELINE_SOURCES:
        files = sorted((package / name).glob("*.py")) if name.endswith("/") else [package / name]
        for file in files:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    for kind in PIPELINE_WEIGHTS:
        digest.update(f"{kind}={weights_sha256(model_path(kind))}\0".encode())
    for names in PIPELINE_LIBRARIES:
        digest.update(f"{names[0]}={_installed_version(names)}\0".encode())
    digest.update(f"onnxruntime used={onnxruntime_available()}".encode())
    return digest.hexdigest()[:16]


def _installed_version(names: Sequence[str]) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "absent"


def pipeline_variant(
    settings: Settings, face_policy: FacePolicy | None = None, *, version: str | None = None
) -> str:
    """What decides the outcome of an image besides its bytes and the model id, as a cache key.

    The face policy (``every-face`` without one), then every
    :class:`Settings` field but those in :data:`SETTINGS_NOT_IN_KEY`, then
    the pipeline's :func:`pipeline_version` (or ``version``, when given):
    ``"policy=dominant;max_pixels=40000000;...;augmentation=none;pipeline=3f0c..."``.
    A number is written the same whether given as an int or a float.
    """
    parts = [f"policy={face_policy or 'every-face'}"]
    for field in dataclasses.fields(settings):
        if field.name not in SETTINGS_NOT_IN_KEY:
            parts.append(f"{field.name}={_key_value(getattr(settings, field.name))}")
    parts.append(f"pipeline={version or pipeline_version()}")
    return ";".join(parts)


def _key_value(value: object) -> str:
    # 16 and 16.0 are one setting (an explicit int, or a float read from the environment).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, str) else repr(value)


class EmbeddingCache:
    """Embeddings of image files, computed once per (file hash, model, variant) and reused.

    Parameters
    ----------
    path : path or sqlite3.Connection, optional
        SQLite file (created with its folders if missing), ``":memory:"``, or
        an open connection. Defaults to :func:`default_cache_path`.
    settings : Settings, optional
        Pipeline settings used for images not yet cached.
    model_id : str, optional
        Id of the embedding model the pipeline uses; by default the id
        ``settings`` give (:func:`~facetrust.models.selection.embedder_model_id`),
        so augmented descriptors are never read as plain ones.
    compute : callable, optional
        Embeds missing images; :func:`facetrust.batch.embed_many` by default.
    face_policy : FacePolicy or None
        Cache the face this policy picks and the pipeline's refusals
        (default: the product's default policy); ``None`` caches every face.

    Attributes
    ----------
    computed_ : int
        Images embedded by this object so far (cache misses).
    hits_ : int
        Images served from the cache so far.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | sqlite3.Connection | None = None,
        settings: Settings | None = None,
        *,
        model_id: str | None = None,
        compute: ComputeFunction | None = None,
        face_policy: FacePolicy | None = DEFAULT_FACE_POLICY,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.model_id = model_id or embedder_model_id(self.settings)
        self.face_policy = face_policy
        self.variant = pipeline_variant(self.settings, face_policy)
        self._compute: ComputeFunction = compute or embed_many
        self.computed_ = 0
        self.hits_ = 0
        if isinstance(path, sqlite3.Connection):
            self.path: Path | None = None
            self._db = path
        else:
            self.path = None if path == ":memory:" else Path(path or default_cache_path())
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(str(self.path or ":memory:"))
                self._db.execute(_SCHEMA)
            except sqlite3.DatabaseError as error:
                raise StoreError(
                    f"Could not open the embedding cache {self.path}: {error}. Delete the "
                    "file (it only holds recomputable embeddings) or pass another cache path."
                ) from None
        self._db.execute(_SCHEMA)

    @property
    def connection(self) -> sqlite3.Connection:
        """The open SQLite connection (share it to read another pipeline variant)."""
        return self._db

    def close(self) -> None:
        """Close the SQLite connection."""
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM images WHERE model_id = ? AND variant = ?",
            (self.model_id, self.variant),
        ).fetchone()
        return int(row[0])

    def get(self, path: str | os.PathLike[str]) -> CachedImage | None:
        """The cached result for one file, or ``None`` when it is not cached."""
        return self._lookup(file_sha256(path))

    def get_or_compute(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        workers: int | None = None,
        progress: bool = False,
    ) -> dict[str, CachedImage]:
        """Results for every path, embedding only the files the cache lacks.

        Parameters
        ----------
        paths : sequence of paths
            Image files. A missing or unreadable file gives a result with
            ``error`` set and no faces (failure to acquire); it is not cached
            when the file does not exist.
        workers : int, optional
            Worker processes for the missing images (default: one per core).
        progress : bool
            Show a progress bar with rate and ETA on stderr while embedding.

        Returns
        -------
        dict
            ``os.fspath(path)`` -> :class:`CachedImage`.
        """
        results: dict[str, CachedImage] = {}
        missing: dict[str, str] = {}  # path -> sha256
        for raw in dict.fromkeys(os.fspath(p) for p in paths):
            try:
                digest = file_sha256(raw)
            except OSError as error:
                results[raw] = CachedImage("", 0, 0, (), type(error).__name__, str(error))
                continue
            cached = self._lookup(digest)
            if cached is None:
                missing[raw] = digest
            else:
                self.hits_ += 1
                results[raw] = cached
        if missing:
            results.update(self._fill(missing, workers, progress))
        return results

    def _fill(
        self, missing: dict[str, str], workers: int | None, progress: bool
    ) -> dict[str, CachedImage]:
        filled: dict[str, CachedImage] = {}
        stream = self._compute(
            list(missing), self.settings, workers=workers, progress=progress,
            face_policy=self.face_policy,
        )
        pending = 0
        for result in stream:
            self.computed_ += 1
            image = _from_result(result, missing[result.source], self.face_policy is not None)
            filled[result.source] = image
            self._store(image)
            pending += 1
            if pending >= _COMMIT_EVERY:
                self._db.commit()
                pending = 0
        self._db.commit()
        return filled

    def _lookup(self, digest: str) -> CachedImage | None:
        row = self._db.execute(
            "SELECT width, height, faces, vectors, error_type, error FROM images "
            "WHERE sha256 = ? AND model_id = ? AND variant = ?",
            (digest, self.model_id, self.variant),
        ).fetchone()
        if row is None:
            return None
        width, height, faces_json, blob, error_type, error = row
        meta = json.loads(faces_json)
        vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(meta), -1) if meta else None
        faces = tuple(
            CachedFace(Box(*m["box"]), float(m["confidence"]), vectors[i])  # type: ignore[index]
            for i, m in enumerate(meta)
        )
        return CachedImage(digest, int(width), int(height), faces, error_type, error)

    def _store(self, image: CachedImage) -> None:
        meta = [
            {
                "box": [f.box.left, f.box.top, f.box.right, f.box.bottom],
                "confidence": f.confidence,
            }
            for f in image.faces
        ]
        blob = b"".join(np.asarray(f.vector, dtype=np.float32).tobytes() for f in image.faces)
        self._db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                image.sha256,
                self.model_id,
                self.variant,
                image.width,
                image.height,
                json.dumps(meta),
                blob,
                image.error_type,
                image.error,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )


def _image_size(path: str) -> tuple[int, int]:
    """Displayed size from the header only; EXIF orientations 5-8 swap the sides."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return int(width), int(height)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the pipeline's error
        return 0, 0


def _from_result(result: ImageResult, digest: str, check_quality: bool) -> CachedImage:
    width, height = _image_size(result.source)
    faces = tuple(
        CachedFace(f.face.box, f.face.confidence, np.asarray(f.embedding.vector, np.float32))
        for f in result.faces
    )
    if result.error is not None:
        return CachedImage(
            digest, width, height, (), type(result.error).__name__, str(result.error)
        )
    if check_quality and result.faces and not result.faces[0].face.quality.passed:
        reasons = "; ".join(result.faces[0].face.quality.reasons)
        return CachedImage(digest, width, height, faces, "FaceQualityTooLow", reasons)
    return CachedImage(digest, width, height, faces)
