"""dlib's face descriptor network run by ONNX Runtime.

The network is converted from the installed ``face_recognition_models``
weights on first use (:mod:`.dlib_format` reads them, :mod:`.onnx_export`
writes the graph), once per machine: the ONNX file is cached in the user
cache directory under a name holding the SHA-256 of the weights, so new
weights give a new conversion and nothing converted is ever shipped or
downloaded. Descriptors equal dlib's to float rounding (max absolute
difference under 1e-6 on LFW), so templates from either backend are interchangeable
and both carry the model id ``dlib-resnet-v1``.

Needs onnxruntime and onnx (installed with facetrust).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidParameter, ModelError
from .dlib_backend import DLIB_RESNET_MODEL_ID, model_path

#: Bumped whenever the exported graph changes, so old cached conversions are not reused.
CONVERTER_VERSION = 1

#: Chips per ONNX Runtime call; larger batches only cost memory.
_MAX_BATCH = 64


def default_cache_dir() -> Path:
    """Where converted models are cached: ``<user cache dir>/facetrust/onnx``."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("facetrust")) / "onnx"


def weights_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ModelError(
            f"Could not read model weights {path}: {error.strerror}. Reinstall "
            "face_recognition_models (pip install --force-reinstall face_recognition_models)."
        ) from None
    return digest.hexdigest()


def convert_dlib_resnet(weights: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Path of the ONNX conversion of ``weights``, converting them if not cached.

    Parameters
    ----------
    weights : Path, optional
        dlib's ``dlib_face_recognition_resnet_model_v1.dat``; the installed
        ``face_recognition_models`` copy by default.
    cache_dir : Path, optional
        Defaults to :func:`default_cache_dir`.

    Returns
    -------
    Path
        ``<cache_dir>/dlib-resnet-v1-<sha256 of weights>-c<converter version>.onnx``.
        Written atomically (a temporary file renamed into place), so
        concurrent workers never read a half-written model.

    Raises
    ------
    ModelError
        The weights are missing, truncated or corrupt (the message names the
        file), the ``onnx`` package is missing, or the cache is not writable.
    """
    from .dlib_format import read_network
    from .onnx_export import build_onnx_model

    weights = weights or model_path("resnet")
    return cached_conversion(
        f"{DLIB_RESNET_MODEL_ID}-c{CONVERTER_VERSION}",
        weights,
        lambda: build_onnx_model(read_network(weights)),
        cache_dir,
    )


def cached_conversion(
    name: str, weights: Path, build: Callable[[], Any], cache_dir: Path | None = None
) -> Path:
    """Path of the cached ONNX conversion of ``weights``, calling ``build`` if there is none.

    Parameters
    ----------
    name : str
        What the conversion is, with its converter version (``"dlib-resnet-v1-c1"``).
    weights : Path
        The dlib weights converted; their SHA-256 is part of the file name, so
        other weights give another conversion.
    build : callable
        Returns the ``onnx.ModelProto``; called only when the cache lacks it.
    cache_dir : Path, optional
        Defaults to :func:`default_cache_dir`.

    Returns
    -------
    Path
        ``<cache_dir>/<name before -c>-<sha256>-c<version>.onnx``, written
        atomically (a temporary file renamed into place), so concurrent
        workers never read a half-written model.

    Raises
    ------
    ModelError
        The weights cannot be read or the cache is not writable.
    """
    cache_dir = cache_dir or default_cache_dir()
    stem, _, version = name.rpartition("-")
    target = cache_dir / f"{stem}-{weights_sha256(weights)}-{version}.onnx"
    if target.is_file():
        return target
    model = build()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=".converting-", suffix=".onnx")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(model.SerializeToString())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise ModelError(
            f"Could not write the converted model to {cache_dir}: {error.strerror}. Make the "
            "directory writable or pass another cache_dir."
        ) from None
    return target


def onnxruntime_available() -> bool:
    """Whether onnxruntime and onnx (needed for the conversion) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def thread_count(threads: int | None, owner: str) -> int:
    """ONNX Runtime intra-op threads for ``threads`` (0 or None: one per CPU core)."""
    if threads is not None and threads < 0:
        raise InvalidParameter(
            f"The 'threads' parameter of {owner} must be 0 (one per core) or more. "
            f"Got {threads} instead."
        )
    return threads or (os.cpu_count() or 1)


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session of the model at ``path`` with ``threads`` intra-op threads.

    Its threads do not spin while waiting for work: spinning made each face cost
    about 1.7 times the CPU at two threads (benchmarks/bench_replicas.py), for
    no gain in throughput, and took the cores from the rest of a service.
    """
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "The ONNX Runtime backend needs onnxruntime. Install it with: "
            "pip install onnxruntime onnx"
        ) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ModelError(
            f"ONNX Runtime could not load the converted model {path} ({error}). Delete it to "
            "convert again."
        ) from None


class OnnxResnetEmbedder:
    """dlib's ResNet face descriptor run by ONNX Runtime, batched and multi-threaded.

    Descriptors match :class:`~facetrust.models.dlib_backend.DlibResnetEmbedder`
    to float rounding; the model id is the same, ``backend`` differs.

    Parameters
    ----------
    weights : Path, optional
        dlib's weights file; the installed ``face_recognition_models`` copy by default.
    threads : int, optional
        ONNX Runtime intra-op threads; 0 or None means one per CPU core. Use 1
        per worker when several worker processes share the machine.
    cache_dir : Path, optional
        Where the conversion is cached (:func:`default_cache_dir` by default).
    """

    model_id = DLIB_RESNET_MODEL_ID
    backend = "onnxruntime"
    chip_size = 150
    chip_padding = 0.25
    dimension = 128

    def __init__(
        self,
        weights: Path | None = None,
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._weights = weights
        self._cache_dir = cache_dir
        self.threads = thread_count(threads, "OnnxResnetEmbedder")
        self._session: Any = None

    def _load(self) -> Any:
        return cpu_session(convert_dlib_resnet(self._weights, self._cache_dir), self.threads)

    def embed(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Descriptors of shape (len(chips), 128), float32; chips are uint8 (150, 150, 3) RGB."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = np.stack([np.asarray(chip) for chip in chips])
        expected = (self.chip_size, self.chip_size, 3)
        if batch.shape[1:] != expected or batch.dtype != np.uint8:
            raise InvalidParameter(
                f"Chips must be uint8 arrays of shape {expected}. Got {batch.dtype} chips of "
                f"shape {batch.shape[1:]}; cut them with FacePipeline.detect."
            )
        if self._session is None:
            self._session = self._load()
        parts = [
            self._session.run(None, {"chips": batch[start : start + _MAX_BATCH]})[0]
            for start in range(0, len(batch), _MAX_BATCH)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)
