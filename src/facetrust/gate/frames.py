"""Frames from a video file, a camera device or a folder of images.

Frames are RGB arrays, read one at a time and never written anywhere: a gate
keeps nothing of a frame it does not match.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from ..config import Settings
from ..errors import FacetrustError, FrameSourceError
from ..images import IMAGE_SUFFIXES, load_image
from ..text import is_whole_number

log = logging.getLogger(__name__)

#: Largest camera index accepted (``/dev/video255``): OpenCV takes a C int and
#: fails with a crash, not an error, on larger numbers.
MAX_CAMERA_INDEX = 255


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame: its position in the stream, its time in seconds, and RGB pixels.

    ``read_at`` is ``time.monotonic()`` when the frame was read: where a
    decision's latency starts.
    """

    index: int
    time_s: float
    pixels: npt.NDArray[np.uint8] = field(repr=False)
    read_at: float = field(default_factory=time.monotonic)


def read_frames(
    source: str | int | os.PathLike[str],
    *,
    folder_fps: float = 10.0,
    settings: Settings | None = None,
) -> Iterator[Frame]:
    """Yield the frames of ``source`` in order.

    Parameters
    ----------
    source : path, camera index or str
        A video file (anything FFmpeg reads), a camera index from 0 to
        :data:`MAX_CAMERA_INDEX` (``0`` or ``"0"``), or a folder of images read
        in name order.
    folder_fps : float
        Frame rate assumed for a folder of images, to give frames a time.
    settings : Settings, optional
        Supplies ``max_pixels``, the largest frame read (as for an uploaded
        photo): a video or camera that declares larger frames is refused before
        its first frame is decoded, and a larger frame mid-stream before it is
        copied. From the environment by default.

    Raises
    ------
    FrameSourceError
        The source does not exist, cannot be opened, yields no frame, or has
        frames over the pixel cap; or a camera index is outside 0 to
        :data:`MAX_CAMERA_INDEX`.
    """
    max_pixels = (settings or Settings.from_env()).max_pixels
    if isinstance(source, int) or (isinstance(source, str) and is_whole_number(source)):
        camera = camera_index(source)
        yield from _read_capture(
            _open_capture(camera), f"camera {camera}", live=True, max_pixels=max_pixels
        )
        return
    path = Path(source)
    if path.is_dir():
        yield from _read_folder(path, folder_fps, settings)
    elif path.is_file():
        yield from _read_capture(
            _open_capture(str(path)), repr(str(path)), live=False, max_pixels=max_pixels
        )
    else:
        raise FrameSourceError(
            f"No video file, folder or camera at {str(source)!r}. Pass a video path, a folder "
            "of images, or a camera index such as 0."
        )


def camera_index(source: int | str) -> int:
    """``source`` (``3`` or ``"3"``) as a camera index, if it is one from 0 to
    :data:`MAX_CAMERA_INDEX`.

    Raises
    ------
    FrameSourceError
        Not a whole number in that range (True and False included).
    """
    number = None
    if isinstance(source, int) and not isinstance(source, bool):
        number = source
    elif isinstance(source, str) and is_whole_number(source):
        number = int(source)
    if number is None or not 0 <= number <= MAX_CAMERA_INDEX:
        shown = source if len(str(source)) <= 40 else f"{str(source)[:40]}..."
        raise FrameSourceError(
            f"A camera index is a whole number from 0 to {MAX_CAMERA_INDEX} (/dev/videoN on "
            f"Linux). Got {shown!r}. Pass the index of a connected camera, a video "
            "file or a folder of images."
        )
    return number


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's own messages ("moov atom not found") off stderr in this process.

    FFmpeg, inside OpenCV, prints what it finds wrong in a video straight to
    stderr, ahead of facetrust's one-line error. OpenCV reads
    ``OPENCV_FFMPEG_LOGLEVEL`` when its FFmpeg backend first starts in a
    process, so this sets it to FFmpeg's quiet level (-8) before the first
    video is opened or written, unless ``OPENCV_FFMPEG_LOGLEVEL`` or
    ``OPENCV_FFMPEG_DEBUG`` is already set: set one of them to see FFmpeg's
    messages (OpenCV prints them on stdout, among the decisions).
    """
    if "OPENCV_FFMPEG_LOGLEVEL" not in os.environ and "OPENCV_FFMPEG_DEBUG" not in os.environ:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET


def _open_capture(source: int | str) -> cv2.VideoCapture:
    quiet_ffmpeg()
    # OpenCV logs its own warnings ("can't open camera by index") on stderr before
    # our one-line error: quiet them while opening.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _too_large(name: str, width: int, height: int, max_pixels: int) -> FrameSourceError:
    return FrameSourceError(
        f"{name} has {width}x{height} = {width * height:,}-pixel frames, over the "
        f"{max_pixels:,}-pixel cap. Record or stream at a lower resolution (a gate needs "
        "about 1280x720), or raise FACETRUST_MAX_PIXELS if you trust the source."
    )


def _read_capture(
    capture: cv2.VideoCapture, name: str, *, live: bool, max_pixels: int
) -> Iterator[Frame]:
    if not capture.isOpened():
        log.debug("OpenCV could not open %s; set OPENCV_FFMPEG_LOGLEVEL=16 to see why", name)
        what = "camera device is missing or busy" if live else "file is not a readable video"
        raise FrameSourceError(
            f"Could not open {name}: the {what}. Check the device or file and try again."
        )
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    index = 0
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:  # declared in the header: refused before decoding
            raise _too_large(name, width, height, max_pixels)
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if bgr.shape[0] * bgr.shape[1] > max_pixels:  # a stream may change its size
                raise _too_large(name, bgr.shape[1], bgr.shape[0], max_pixels)
            time_s = (
                index / fps if fps > 0 and not live else capture.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            )
            rgb = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
            yield Frame(index, time_s, rgb)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise FrameSourceError(
            f"{name} opened but gave no frame; the video may be empty or damaged."
        )


def _read_folder(folder: Path, fps: float, settings: Settings | None) -> Iterator[Frame]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FrameSourceError(
            f"The folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})."
        )
    for index, path in enumerate(files):
        try:
            pixels = load_image(path, settings)
        except FacetrustError as error:
            raise FrameSourceError(f"Frame {path.name} cannot be read: {error}") from None
        yield Frame(index, index / fps, pixels)
