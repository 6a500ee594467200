"""A video of people arriving at a gate, built from real photos (for demos and benchmarks).

Each arrival shows one photo on a plain background for ``seconds_each``,
growing slightly as the person walks up, followed by a short empty gap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from ..errors import FrameSourceError, InvalidParameter
from ..images import ImageSource, load_image
from .frames import quiet_ffmpeg


def write_arrivals_video(
    photos: Sequence[ImageSource],
    path: str | os.PathLike[str],
    *,
    fps: float = 10.0,
    seconds_each: float = 1.0,
    gap_seconds: float = 0.3,
    size: tuple[int, int] = (1280, 720),
    face_height: float = 0.8,
) -> int:
    """Write an MP4 (``mp4v``) video of one arrival per photo; returns the frame count.

    Parameters
    ----------
    photos : sequence of image sources
        One photo per arriving person, in order.
    size : (width, height)
        Frame size in pixels; 1280x720 by default.
    face_height : float
        Final height of the photo as a fraction of the frame height.
    """
    if not photos:
        raise InvalidParameter("write_arrivals_video needs at least one photo.")
    width, height = size
    quiet_ffmpeg()
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise FrameSourceError(f"Could not open {os.fspath(path)!r} for writing an MP4 video.")
    background = _background(width, height)
    frames = 0
    try:
        for photo in photos:
            rgb = load_image(photo)
            steps = max(1, round(seconds_each * fps))
            for step in range(steps):
                grow = 0.85 + 0.15 * step / max(1, steps - 1)
                frame = _place(background, rgb, face_height * grow)
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
                frames += 1
            for _ in range(round(gap_seconds * fps)):
                writer.write(np.ascontiguousarray(background[:, :, ::-1]))
                frames += 1
    finally:
        writer.release()
    return frames


def _background(width: int, height: int) -> npt.NDArray[np.uint8]:
    ramp = np.linspace(70, 130, width, dtype=np.float32)
    gray = np.tile(ramp, (height, 1)).astype(np.uint8)
    return np.stack([gray, gray, gray], axis=-1)


def _place(
    background: npt.NDArray[np.uint8], rgb: npt.NDArray[np.uint8], fraction: float
) -> npt.NDArray[np.uint8]:
    frame = background.copy()
    height, width = frame.shape[:2]
    side = int(height * fraction)
    photo = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    top, left = (height - side) // 2, (width - side) // 2
    frame[top : top + side, left : left + side] = photo
    return frame


def arrival_photos(folder: Path, per_identity: int = 1) -> list[Path]:
    """The first ``per_identity`` photos of each identity folder under ``folder``."""
    return [
        photo
        for identity in sorted(p for p in folder.iterdir() if p.is_dir())
        for photo in sorted(identity.glob("*.jpg"))[:per_identity]
    ]
