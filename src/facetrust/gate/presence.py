"""Picking the best frame of each person standing in front of one gate camera.

A *presence* is one face seen in consecutive frames of one camera, linked by
box overlap, for the few seconds someone stands at the gate. It is not
tracking: nothing links a presence to another camera, to an earlier visit or
to anything after its decision, and it is forgotten once the face leaves view.

A presence is ready for a decision once it has shown a face of passing quality
and either ``window_s`` seconds have passed since that first good frame (the
best frame within the window wins) or the face has left the view. A presence
whose face never passed quality is reported when it leaves, so the person is
referred to staff instead of silently ignored.

A presence stays linked to the same place in view after its decision, so it is
not decided again while the person stands there. The next person in a queue may
take that place without a gap, though, so a decided presence still in view for
``recheck_s`` seconds is followed by a new one (``continues`` names the
decided one): the gate compares its face with the decided person's and decides
only when it is someone else.

Several faces in one frame are several presences, each decided on its own; each
presence counts the most other faces seen beside it in one frame before it was
ready (``others_in_frame``), so that a decision taken with someone else in
front of the camera says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import InvalidParameter
from ..faces import Box, Face


def frame_score(face: Face) -> float:
    """How good a face is as a probe: size, sharpness and frontality (higher is better)."""
    q = face.quality
    size = min(q.inter_eye_px, 100.0) / 100.0
    sharpness = min(q.sharpness, 100.0) / 100.0
    frontal = max(0.0, 1.0 - abs(q.yaw)) * math.cos(math.radians(min(abs(q.roll_deg), 89.0)))
    return size * (0.5 + 0.5 * sharpness) * frontal


def box_overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    width = min(a.right, b.right) - max(a.left, b.left)
    height = min(a.bottom, b.bottom) - max(a.top, b.top)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.area + b.area - inter)


@dataclass(frozen=True, eq=False)
class ReadyPresence:
    """A presence ready for a decision.

    Attributes
    ----------
    presence : int
        Number of the presence within this gate session.
    face : Face or None
        The best face seen (with its chip); None when no face passed quality.
    frame_index, frame_time_s :
        Where the best face was seen.
    first_good_wall_s : float or None
        ``time.monotonic()`` when the first passing face was seen: the start of
        the decision latency.
    frames_seen : int
    others_in_frame : int
        The most other faces (of any quality) detected in one frame beside this
        presence's face, from its first frame until it became ready; 0 when it
        was always alone.
    continues : int or None
        The decided presence this one follows at the same place in view (the same
        person still standing there, or the next one in the queue); None for a
        face that came into view.
    """

    presence: int
    face: Face | None
    frame_index: int
    frame_time_s: float
    first_good_wall_s: float | None
    frames_seen: int
    others_in_frame: int = 0
    continues: int | None = None


@dataclass(eq=False)
class _Presence:
    number: int
    box: Box
    last_frame: int
    frames_seen: int = 1
    best: Face | None = None
    best_score: float = -1.0
    best_frame: int = -1
    best_time_s: float = 0.0
    first_good_time_s: float | None = None
    first_good_wall_s: float | None = None
    others_in_frame: int = 0
    continues: int | None = None
    decided: bool = False
    decided_time_s: float = math.inf

    def ready(self, time_s: float = math.inf) -> ReadyPresence:
        self.decided = True
        self.decided_time_s = time_s
        return ReadyPresence(
            self.number,
            self.best,
            self.best_frame,
            self.best_time_s,
            self.first_good_wall_s,
            self.frames_seen,
            self.others_in_frame,
            self.continues,
        )


class BestFrameSelector:
    """Groups faces of consecutive frames into presences and picks each one's best frame.

    Parameters
    ----------
    window_s : float
        Seconds after the first good frame to keep looking for a better one.
    gone_after_frames : int
        A presence not seen for this many frames has left the view.
    min_overlap : float
        Box intersection-over-union linking a face to a presence of the previous frame.
    recheck_s : float
        Seconds after a presence's decision, while it stays in view, before a new
        presence follows it there (see the module notes).
    """

    def __init__(
        self,
        window_s: float = 0.3,
        gone_after_frames: int = 3,
        min_overlap: float = 0.3,
        recheck_s: float = 0.5,
    ) -> None:
        if (
            window_s < 0 or gone_after_frames < 1 or not 0 < min_overlap <= 1
            or not recheck_s > 0
        ):
            raise InvalidParameter(
                "BestFrameSelector needs window_s >= 0, gone_after_frames >= 1, "
                f"min_overlap in (0, 1] and recheck_s > 0. Got {window_s}, "
                f"{gone_after_frames}, {min_overlap}, {recheck_s}."
            )
        self.recheck_s = recheck_s
        self.window_s = window_s
        self.gone_after_frames = gone_after_frames
        self.min_overlap = min_overlap
        self._active: list[_Presence] = []
        self._count = 0

    def update(
        self, frame_index: int, time_s: float, faces: list[Face], wall_s: float | None = None
    ) -> list[ReadyPresence]:
        """Feed one frame's faces; returns the presences that became ready.

        ``wall_s`` is ``time.monotonic()`` when the frame was read (now by default).
        """
        wall = time.monotonic() if wall_s is None else wall_s
        ready: list[ReadyPresence] = []
        unmatched = list(self._active)
        for face in faces:
            presence = self._link(face, unmatched)
            if presence is None:
                self._count += 1
                presence = _Presence(self._count, face.box, frame_index)
                self._active.append(presence)
            else:
                unmatched.remove(presence)
                if presence.decided and time_s - presence.decided_time_s >= self.recheck_s:
                    # decided a while ago and still in view: who stands there now
                    # is looked at again (it may be the next person in the queue)
                    self._active.remove(presence)
                    self._count += 1
                    presence = _Presence(self._count, face.box, frame_index,
                                         continues=presence.number)
                    self._active.append(presence)
                else:
                    presence.box, presence.last_frame = face.box, frame_index
                    presence.frames_seen += 1
            if not presence.decided:
                presence.others_in_frame = max(presence.others_in_frame, len(faces) - 1)
                self._consider(presence, face, frame_index, time_s, wall)
        for presence in list(self._active):
            gone = frame_index - presence.last_frame >= self.gone_after_frames
            if gone:
                self._active.remove(presence)
                if not presence.decided:
                    ready.append(presence.ready())
            elif (
                not presence.decided
                and presence.first_good_time_s is not None
                and time_s - presence.first_good_time_s >= self.window_s
            ):
                ready.append(presence.ready(time_s))
        return ready

    def flush(self) -> list[ReadyPresence]:
        """End of stream: every undecided presence is ready."""
        ready = [p.ready() for p in self._active if not p.decided]
        self._active.clear()
        return ready

    def _link(self, face: Face, candidates: list[_Presence]) -> _Presence | None:
        best, best_overlap = None, self.min_overlap
        for presence in candidates:
            overlap = box_overlap(face.box, presence.box)
            if overlap >= best_overlap:
                best, best_overlap = presence, overlap
        return best

    @staticmethod
    def _consider(
        presence: _Presence, face: Face, frame_index: int, time_s: float, wall_s: float
    ) -> None:
        if not face.quality.passed:
            return
        if presence.first_good_time_s is None:
            presence.first_good_time_s = time_s
            presence.first_good_wall_s = wall_s
        score = frame_score(face)
        if score > presence.best_score:
            presence.best, presence.best_score = face, score
            presence.best_frame, presence.best_time_s = frame_index, time_s
