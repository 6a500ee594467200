"""Running a gate: frames in, one decision per person out.

The event is checked (open, inside its window) before the source is opened.
Several faces in one frame are several people, each decided on their own; each
decision says how many other faces were beside that person's
(``others_in_frame``). A face that takes the place of a decided one in view (the
next person in a queue without a gap) is compared with the decided person's and
decided when it is someone else (:mod:`.presence`).

Frames are read here and detected in two threads (dlib's HOG and OpenCV
release the GIL, so both cores work); the best face of each presence is
embedded in a third thread while the camera keeps being read; every decision
is matched and audited here, in frame order. A run that stops early (the
event closed or its window ended, Ctrl-C, the caller closed the iterator)
audits a refusal for each person it had seen but not decided. No frame is ever written
anywhere; only a matched face crop may be kept, encrypted, when the policy
asks for it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2

from ..config import Settings
from ..errors import FrameSourceError, InvalidParameter
from ..faces import Embedding, Face
from ..gallery import Gallery
from ..gallery.checks import check_name
from ..gallery.refusals import audit_refusal
from ..matching import compare
from ..pipeline import FacePipeline
from .decisions import GateDecision, check_keep_crop_hours, match_at_gate, refuse_at_gate
from .events import event_record, require_event_in_window
from .frames import Frame, read_frames
from .presence import BestFrameSelector, ReadyPresence

#: Longest wait for a better frame, in seconds: a person stands at the gate a few seconds.
MAX_WINDOW_S = 10.0

#: Decided people remembered, by presence, to tell whether the face that follows
#: one at the same place in view is someone else (see :mod:`.presence`).
REMEMBERED_PRESENCES = 256

#: Threads detecting faces in consecutive frames; dlib's HOG releases the GIL,
#: so two threads keep both cores busy while a third embeds.
DETECTION_THREADS = 2


@dataclass(frozen=True)
class GatePolicy:
    """How a gate behaves.

    Attributes
    ----------
    window_s : float
        Seconds after a person's first good frame to look for a better one.
    detection_max_side : int
        Longer side of the copy detection runs on (faces at a gate are large).
    keep_crop_hours : float or None
        Keep the face crop of *matched* probes, encrypted, this many hours, at
        most :data:`~.decisions.MAX_CROP_HOURS` (None or 0: keep nothing).
        Unmatched probes are never kept.

    Raises
    ------
    InvalidParameter
        ``window_s`` is not a number of seconds in [0, :data:`MAX_WINDOW_S`], or
        ``keep_crop_hours`` is out of its range (NaN and infinity included).
    """

    window_s: float = 0.3
    detection_max_side: int = 480
    keep_crop_hours: float | None = None

    def __post_init__(self) -> None:
        window = self.window_s
        if isinstance(window, bool) or not isinstance(window, int | float) or not (
            0 <= window <= MAX_WINDOW_S
        ):
            raise InvalidParameter(
                "The 'window_s' of a gate (how long to look for a better frame of a person) "
                f"must be a number of seconds in [0, {MAX_WINDOW_S:g}]. Got {window!r} instead."
            )
        check_keep_crop_hours(self.keep_crop_hours)


def run_gate(
    gallery: Gallery,
    event_id: str,
    source: str | int | os.PathLike[str],
    *,
    gate_id: str,
    actor: str,
    policy: GatePolicy | None = None,
    settings: Settings | None = None,
) -> Generator[GateDecision, None, None]:
    """Read ``source`` and yield one decision per person who stood at the gate.

    The event and ``gate_id`` are checked when this is called, before the
    source is opened: a refusal reads no frame. Each face in a frame is its
    own person with its own decision (see :class:`~.decisions.GateDecision`'s
    ``others_in_frame``).

    ``settings`` default to those of the gallery's pipeline
    (``gallery.pipeline.settings``), read as video frames are
    (:meth:`Settings.for_video <facetrust.config.Settings.for_video>`): the
    probes are embedded as the gallery's templates were.

    Raises
    ------
    EventError
        When called: the event is unknown, closed or outside its window. While
        iterating: the event was closed or its window ended mid-run. The
        decision it refused, and every person already seen but not decided, is
        audited as ``gate.decision.refused``
        (:func:`~facetrust.gate.decisions.refuse_at_gate`); the run stops.
    InvalidParameter
        When called: ``gate_id`` is not a name
        :func:`~facetrust.gallery.checks.check_name` accepts.
    FrameSourceError
        While iterating: the video, camera or folder cannot be read. The people
        seen in the frames read before it are decided first.

    Notes
    -----
    A refusal when called is audited as ``gate.run.refused`` (no frame was read);
    one while iterating, as ``gate.decision.refused`` (see :func:`match_at_gate`).
    A run stopped before its end (Ctrl-C, the caller closing the iterator, a
    failure) audits a refusal for each person it had seen but not decided. If
    you stop iterating early, close the iterator (``contextlib.closing``) while
    the gallery is still open.
    """
    with audit_refusal(gallery.audit, "gate.run", actor, None, [], event_id=event_id):
        gate_id = check_name(gate_id, "gate_id")
        require_event_in_window(gallery, event_id)
    policy = policy or GatePolicy()
    return _decisions(
        gallery, event_id, source, gate_id=gate_id, actor=actor, policy=policy, settings=settings
    )


def _decisions(
    gallery: Gallery,
    event_id: str,
    source: str | int | os.PathLike[str],
    *,
    gate_id: str,
    actor: str,
    policy: GatePolicy,
    settings: Settings | None,
) -> Generator[GateDecision, None, None]:
    # the gallery's own pipeline settings: its templates were made with them
    base = settings or gallery.pipeline.settings
    gate_settings = base.for_video(policy.detection_max_side)
    embedder = FacePipeline(gate_settings).embedder  # used by the embedding thread only
    selector = BestFrameSelector(window_s=policy.window_s)
    operating_point = event_record(gallery, event_id).operating_point
    decided_probes: dict[int, Embedding | None] = {}  # presence -> its decided face
    pending: deque[tuple[ReadyPresence, Future[Embedding | None]]] = deque()
    detecting: deque[Future[tuple[Frame, list[Face]]]] = deque()
    local = threading.local()

    def detect(frame: Frame) -> tuple[Frame, list[Face]]:
        # dlib detectors must not be shared between threads: one pipeline per thread.
        pipeline = getattr(local, "pipeline", None)
        if pipeline is None:
            pipeline = local.pipeline = FacePipeline(gate_settings)
        return frame, pipeline.detect(frame.pixels)

    def embed(face: Face | None) -> Embedding | None:
        if face is None or face.chip is None:
            return None
        return Embedding(embedder.embed([face.chip])[0], embedder.model_id)

    def decide(ready: ReadyPresence, probe: Embedding | None) -> GateDecision:
        crop = None
        chip = ready.face.chip if ready.face is not None else None
        if probe is not None and policy.keep_crop_hours and chip is not None:
            crop = bytes(cv2.imencode(".jpg", chip[:, :, ::-1])[1])
        latency = (
            time.monotonic() - ready.first_good_wall_s
            if ready.first_good_wall_s is not None
            else None
        )
        return match_at_gate(
            gallery,
            event_id,
            probe,
            gate_id=gate_id,
            actor=actor,
            crop_jpeg=crop,
            keep_crop_hours=policy.keep_crop_hours,
            frame_index=ready.frame_index,
            latency_s=latency,
            others_in_frame=ready.others_in_frame,
        )

    def select(frame: Frame, faces: list[Face]) -> Iterator[GateDecision]:
        for ready in selector.update(frame.index, frame.time_s, faces, frame.read_at):
            pending.append((ready, worker.submit(embed, ready.face)))
        while pending and pending[0][1].done():
            yield from decide_next()

    def is_decided_person(ready: ReadyPresence, probe: Embedding | None) -> bool:
        # A presence that follows a decided one at the same place in view: the same
        # person still standing there is not decided again; someone else is.
        if ready.continues is None or ready.continues not in decided_probes:
            return False
        before = decided_probes.pop(ready.continues)
        if probe is None:
            same = True  # no usable face: nothing new to decide about who stands there
        elif before is None:
            same = False  # the decided face was not usable, this one is
        else:
            same = compare(before, probe, operating_point).match
        if same:
            decided_probes[ready.presence] = probe if probe is not None else before
        return same

    def decide_next() -> Iterator[GateDecision]:
        ready, future = pending[0]
        probe = future.result()
        pending.popleft()  # match_at_gate audits its own refusal: not refused again
        if is_decided_person(ready, probe):
            return
        decision = decide(ready, probe)
        decided_probes[ready.presence] = probe
        while len(decided_probes) > REMEMBERED_PRESENCES:
            del decided_probes[next(iter(decided_probes))]
        yield decision

    def refuse_undecided(reason: BaseException) -> None:
        # Everyone whose face was already detected, waiting for an embedding, a
        # better frame or the end of the stream, gets a refusal in the audit:
        # nothing of them is embedded or kept from here on.
        undecided: list[ReadyPresence] = []
        for ready, embedding in pending:
            embedding.cancel()  # not embedded, if the embedding has not started
            undecided.append(ready)
        pending.clear()
        while detecting:
            detection = detecting.popleft()
            if detection.cancel():
                continue  # never detected: no face was processed
            try:
                frame, faces = detection.result()
            except Exception:  # noqa: BLE001 - a failed detection processed no face
                continue
            undecided += selector.update(frame.index, frame.time_s, faces, frame.read_at)
        undecided += selector.flush()
        for ready in undecided:
            if ready.continues in decided_probes:
                continue  # where a decided person stood: not known to be anyone else
            refuse_at_gate(
                gallery, event_id, reason, gate_id=gate_id, actor=actor,
                frame_index=ready.frame_index, others_in_frame=ready.others_in_frame,
            )

    with (
        ThreadPoolExecutor(DETECTION_THREADS, thread_name_prefix="gate-detect") as detectors,
        ThreadPoolExecutor(1, thread_name_prefix="gate-embed") as worker,
    ):
        source_error: FrameSourceError | None = None
        try:
            try:
                for frame in read_frames(source, settings=base):
                    detecting.append(detectors.submit(detect, frame))
                    if len(detecting) >= DETECTION_THREADS:
                        yield from select(*detecting.popleft().result())
            except FrameSourceError as error:
                source_error = error  # the people already seen are still decided
            while detecting:
                yield from select(*detecting.popleft().result())
            for ready in selector.flush():
                pending.append((ready, worker.submit(embed, ready.face)))
            while pending:
                yield from decide_next()
        except BaseException as stop:
            # The event closed or its window ended (EventError from match_at_gate),
            # Ctrl-C, the caller closing this iterator (GeneratorExit), a failure.
            refuse_undecided(stop)
            raise
    if source_error is not None:
        raise source_error
