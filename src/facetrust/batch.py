"""Many images at once: one worker process per core, models loaded once per worker.

dlib's descriptor holds one core whatever the batch size, and threads do not
help it, so parallelism comes from processes. Workers read and decode the
files themselves; only small results travel back.

Workers end with the process that started them, however it ends. Each holds
the reading end of a pipe (the *lifeline*) whose only writing end stays in
the starting process, and a thread that waits on it: when that process ends
-- SIGKILL included -- the kernel closes the writing end, the read returns,
and the worker exits. The kernel's parent-death signal (``prctl
PR_SET_PDEATHSIG``) would not do: a worker's parent is the forkserver, not
the starting process, and the forkserver only exits once every worker has
(each holds its "alive" pipe, so that it could start processes itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tqdm import tqdm

from .config import Settings, cores_per_process
from .errors import FacetrustError, InvalidParameter, WorkerStopped
from .faces import EmbeddedFace
from .pipeline import FacePipeline, FacePolicy

#: One pipeline per worker process, built by the pool initializer. Process-local
#: by design: it is how models are loaded once per process and never at import.
_worker_pipeline: FacePipeline | None = None


@dataclass(frozen=True)
class ImageResult:
    """What one image gave: its faces with embeddings, or the error that stopped it.

    Attributes
    ----------
    source : str
        The path (or label) of the image, as given.
    faces : list of EmbeddedFace
        Every face found, largest first, without pixel chips (with a face
        policy, the one face it picked); empty on error or when no face was
        found.
    error : FacetrustError or None
        What stopped the image: unreadable, or, with a face policy, the
        policy's refusal (:class:`~facetrust.errors.NoFaceFound`,
        :class:`~facetrust.errors.MultipleFaces`).
    """

    source: str
    faces: list[EmbeddedFace]
    error: FacetrustError | None = None


#: Most worker processes :func:`embed_many` starts (``--workers``).
MAX_WORKERS = 256

#: The face policy of this worker process's jobs, set with its pipeline.
_worker_policy: FacePolicy | None = None


#: A worker's exit status when the process that started it has ended.
EXIT_STARTER_GONE = 3


def _init_worker(
    settings: Settings, face_policy: FacePolicy | None, lifeline: Connection
) -> None:
    global _worker_pipeline, _worker_policy
    # Ctrl-C reaches every process of the terminal's group: the starting
    # process decides what stops, and its workers go with it (the lifeline).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_starter, args=(lifeline,), daemon=True,
                     name="facetrust-lifeline").start()
    _worker_pipeline = FacePipeline(settings)
    _worker_policy = face_policy


def _exit_with_starter(lifeline: Connection) -> None:
    """Wait until the starting process closes the lifeline (or ends), then exit at once."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()  # nothing is ever sent: this returns on end of file
    os._exit(EXIT_STARTER_GONE)


def _process(path: str) -> ImageResult:
    pipeline = _worker_pipeline
    if pipeline is None:  # only when called in-process
        raise RuntimeError("worker pipeline not initialised")
    return process_image(pipeline, path, _worker_policy)


def process_image(
    pipeline: FacePipeline, path: str, face_policy: FacePolicy | None = None
) -> ImageResult:
    """Embed every face of one image (with ``face_policy``, the one it picks).

    Errors are returned, not raised.
    """
    try:
        faces = pipeline.embed(path, face_policy)
    except FacetrustError as error:
        return ImageResult(path, [], error)
    return ImageResult(path, [EmbeddedFace(f.face.without_chip(), f.embedding) for f in faces])


def check_workers(workers: int | None, function: str = "embed_many") -> None:
    """Refuse a ``workers`` count that is not None or an integer in [1, :data:`MAX_WORKERS`].

    Raises
    ------
    InvalidParameter
    """
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or not (
        1 <= workers <= MAX_WORKERS
    ):
        raise InvalidParameter(
            f"The 'workers' parameter of {function} must be an integer in [1, {MAX_WORKERS}] "
            f"(or None: one per core). Got {workers!r} instead.",
            field="workers",
        )


def check_pipeline_workers(
    pipeline: FacePipeline | None, workers: int | None, function: str = "embed_many"
) -> None:
    """Refuse worker processes for a pipeline given custom models.

    A worker process builds its pipeline anew from the settings (models cannot be
    sent to it), which for a pipeline given its own detector, landmarker or
    embedder would be another pipeline, with another model id.

    Raises
    ------
    InvalidParameter
        ``pipeline`` was given custom backends and ``workers`` is above 1.
    """
    if pipeline is None or pipeline.has_default_models or workers is None or workers <= 1:
        return
    given = " and ".join(pipeline.custom_backends)
    raise InvalidParameter(
        f"The 'workers' parameter of {function} must be 1 for a face pipeline given its "
        f"own {given} (model {pipeline.model_id!r}): custom models cannot be sent to "
        f"worker processes, which would embed with the default models instead. Got "
        f"{workers} instead: pass workers=1 to embed in this process.",
        field="workers",
    )


def embed_many(
    paths: Iterable[str | os.PathLike[str]],
    settings: Settings | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    description: str = "embedding",
    face_policy: FacePolicy | None = None,
    pipeline: FacePipeline | None = None,
) -> Generator[ImageResult, None, None]:
    """Embed the faces of many image files in parallel, yielding results in input order.

    Closing the generator before its end (``close()``, or dropping it) ends the
    worker processes at once, without finishing the images queued to them.

    Parameters
    ----------
    paths : iterable of paths
    settings : Settings, optional
    workers : int, optional
        Worker processes, in [1, :data:`MAX_WORKERS`]; defaults to
        ``settings.worker_count`` (one per core). 1 runs in this process.
    progress : bool
        Show a progress bar with rate and ETA on stderr.
    face_policy : FacePolicy, optional
        Keep only the face this policy picks (see
        :meth:`FacePipeline.embed <facetrust.pipeline.FacePipeline.embed>`);
        every face when omitted. ``"crop"`` treats each image as a face crop.
    pipeline : FacePipeline, optional
        The pipeline to embed with (a gallery's, say), instead of one built from
        ``settings`` (give one or the other). In this process it is used as it
        is; worker processes each build it anew from its settings, which only
        a pipeline with the default models allows
        (:attr:`FacePipeline.has_default_models`): one given its own detector,
        landmarker or embedder runs in this process (``workers`` defaults to 1)
        and refuses ``workers`` above 1.

    Raises
    ------
    InvalidParameter
        ``workers`` out of range, or above 1 with a pipeline given custom models;
        both ``settings`` and ``pipeline`` given (at the call, before any image is
        read).
    """
    check_workers(workers)
    check_pipeline_workers(pipeline, workers)
    if pipeline is not None and settings is not None and settings != pipeline.settings:
        raise InvalidParameter(
            "embed_many takes settings or a pipeline, not both: the pipeline has settings "
            "of its own. Drop one."
        )
    settings = pipeline.settings if pipeline is not None else settings or Settings.from_env()
    items = [os.fspath(p) for p in paths]
    if pipeline is not None and not pipeline.has_default_models:
        count = 1
    else:
        count = workers if workers is not None else settings.worker_count
    return _embed(items, settings, count, progress, description, face_policy, pipeline)


def _embed(
    items: list[str],
    settings: Settings,
    count: int,
    progress: bool,
    description: str,
    face_policy: FacePolicy | None,
    pipeline: FacePipeline | None = None,
) -> Generator[ImageResult, None, None]:
    bar = tqdm(total=len(items), unit="img", desc=description, disable=not progress)
    try:
        if count <= 1 or len(items) < 2:
            pipeline = pipeline or FacePipeline(settings)
            for path in items:
                yield process_image(pipeline, path, face_policy)
                bar.update()
            return
        if settings.embedder_threads == 0:
            settings = dataclasses.replace(settings, embedder_threads=cores_per_process(count))
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported numpy, OpenCV and dlib once.
        context.set_forkserver_preload(["facetrust.batch"])
        chunk = max(1, min(16, len(items) // (count * 8)))
        # Only this process holds the writing end (not inherited, never sent).
        lifeline, keep_alive = context.Pipe(duplex=False)
        pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=context,
            initializer=_init_worker,
            initargs=(settings, face_policy, lifeline),
        )
        finished = False
        try:
            for result in pool.map(_process, items, chunksize=chunk):
                yield result
                bar.update()
            finished = True
        except BrokenProcessPool:
            raise WorkerStopped(
                "An embedding worker process ended before finishing its images (killed, or "
                "out of memory). Run again, with fewer workers if memory is short (a batch "
                "enrolment skips the photos it enrolled before)."
            ) from None
        finally:
            if not finished:
                # Stopped early (Ctrl-C, SIGTERM, an error, the caller's break):
                # the workers exit now instead of finishing the photos queued to them.
                keep_alive.close()
            pool.shutdown(wait=True, cancel_futures=True)
            keep_alive.close()
            lifeline.close()
    finally:
        bar.close()
