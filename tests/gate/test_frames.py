"""Gate camera input: frame sources and best-frame selection on a video of real photos."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust import FacePipeline, Settings
from facetrust.errors import FrameSourceError
from facetrust.gallery import Gallery
from facetrust.gate import events
from facetrust.gate.arrivals import arrival_photos, write_arrivals_video
from facetrust.gate.frames import read_frames
from facetrust.gate.presence import BestFrameSelector, box_overlap
from installed_command import INSTALLED, shell_env

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"


@pytest.fixture(scope="module")
def arrivals_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    photos = arrival_photos(SAMPLE)[:4]
    path = tmp_path_factory.mktemp("gate") / "arrivals.mp4"
    frames = write_arrivals_video(photos, path, fps=10, seconds_each=1.0, gap_seconds=0.3)
    return path, frames


def test_video_frames_are_read_in_order_with_times(arrivals_video: tuple[Path, int]) -> None:
    path, count = arrivals_video
    frames = list(read_frames(path))
    assert len(frames) == count == 4 * 13
    assert frames[0].pixels.shape == (720, 1280, 3)
    assert [f.index for f in frames] == list(range(count))
    assert frames[10].time_s == pytest.approx(1.0)


def test_folder_of_images_is_a_frame_source(tmp_path: Path) -> None:
    for i, photo in enumerate(arrival_photos(SAMPLE)[:3]):
        (tmp_path / f"{i:03d}.jpg").write_bytes(photo.read_bytes())
    frames = list(read_frames(tmp_path, folder_fps=5))
    assert [f.time_s for f in frames] == [0.0, 0.2, 0.4]


@pytest.mark.parametrize("source", [2**31, "2147483648", 2**63, -1, 256, True])
def test_camera_indexes_outside_0_to_255_are_refused_before_opencv(source: object) -> None:
    with pytest.raises(FrameSourceError, match="A camera index is a whole number from 0 to 255"):
        next(read_frames(source))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["corrupt", "missing", "empty-folder", "camera"])
def test_unreadable_sources_give_a_clear_error(tmp_path: Path, kind: str) -> None:
    source: str | Path
    if kind == "corrupt":
        source = tmp_path / "broken.mp4"
        source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
        match = "not a readable video"
    elif kind == "missing":
        source, match = tmp_path / "nothing.mp4", "No video file"
    elif kind == "empty-folder":
        source, match = tmp_path, "holds no images"
    else:
        source, match = "97", "camera device is missing"
    with pytest.raises(FrameSourceError, match=match):
        list(read_frames(source))


def test_frames_over_the_pixel_cap_are_refused_before_the_first_is_decoded(
    arrivals_video: tuple[Path, int], tmp_path: Path
) -> None:
    """A 1280x720 video under a cap of 900,000 pixels: refused from its header, as an
    uploaded photo over the cap is; a folder's images are held to the same cap."""
    path, _ = arrivals_video
    capped = Settings(max_pixels=900_000)
    frames = read_frames(path, settings=capped)
    with pytest.raises(FrameSourceError, match=r"1280x720 = 921,600-pixel frames, over the "
                                               r"900,000-pixel cap\. Record or stream"):
        next(frames)
    (tmp_path / "000.jpg").write_bytes(arrival_photos(SAMPLE)[0].read_bytes())
    with pytest.raises(FrameSourceError, match="over the 1,000-pixel cap"):
        next(read_frames(tmp_path, settings=Settings(max_pixels=1_000)))


@pytest.mark.slow  # runs the installed command
def test_the_gate_command_refuses_frames_over_the_cap(
    arrivals_video: tuple[Path, int], tmp_path: Path
) -> None:
    path, _ = arrivals_video
    gallery, _ = Gallery.init_folder(tmp_path / "gallery")
    with gallery:
        now = gallery.now()
        events.open_event(gallery, "flight-1", purpose="boarding", actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=1))
    env = shell_env(tmp_path / "gallery", FACETRUST_MAX_PIXELS="900000")
    done = subprocess.run(
        [INSTALLED, "gate", "run", "--event", "flight-1",
         "--source", str(path)], capture_output=True, text=True, env=env, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "921,600-pixel frames, over the 900,000-pixel cap" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_one_ready_presence_per_arrival_with_its_best_frame(
    arrivals_video: tuple[Path, int],
) -> None:
    pipeline = FacePipeline(Settings(detection_max_side=480, detection_retry=False))
    selector = BestFrameSelector(window_s=0.3)
    ready = []
    for frame in read_frames(arrivals_video[0]):
        ready += selector.update(frame.index, frame.time_s, pipeline.faces_in_pixels(frame.pixels))
    ready += selector.flush()
    arrivals = [p for p in ready if p.continues is None]
    assert len(arrivals) == 4
    for number, presence in enumerate(arrivals):
        assert presence.face is not None and presence.face.quality.passed
        # Arrival n occupies frames 13n .. 13n+9; its best frame lies among them.
        assert 13 * number <= presence.frame_index <= 13 * number + 9
    # a face still in view 0.5 s after its decision is looked at again, within its arrival
    arrival_of = {p.presence: n for n, p in enumerate(arrivals)}
    for presence in ready:
        if presence.continues is not None:
            number = arrival_of[presence.presence] = arrival_of[presence.continues]
            if presence.face is not None:
                assert 13 * number <= presence.frame_index <= 13 * number + 9


def test_box_overlap() -> None:
    from facetrust.faces import Box

    assert box_overlap(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert box_overlap(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_overlap(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0
