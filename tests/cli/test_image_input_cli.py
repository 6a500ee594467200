"""Photos that are not still photos, through the installed command: an animated PNG or
WebP is refused in one line, naming the frames, before anything is written (which
frame would be the face?), while a phone's multi-picture JPEG (MPO), a still photo
with a second, smaller view, is read as the still photo it is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from PIL import Image

from facetrust.gallery import Gallery
from installed_command import INSTALLED, installed_runner, shell_env

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"

Runner = Callable[..., CompletedProcess[str]]


def _frames(name: str, number: int) -> list[Image.Image]:
    return [Image.open(SAMPLE / name / f"{name}_{number:04d}.jpg").convert("RGB")]


def _save_all(path: Path, frames: list[Image.Image], fmt: str) -> Path:
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    path.write_bytes(buffer.getvalue())
    return path


def _kofi_consented(folder: Path, tmp_path: Path) -> Runner:
    """The installed command on a new gallery in ``folder`` where 'kofi' consented to
    boarding (nothing enrolled)."""
    facetrust: Runner = installed_runner(folder)
    facetrust("init", str(folder))
    form = tmp_path / "form.txt"
    form.write_text("signed")
    facetrust("subject", "add", "kofi")
    facetrust("consent", "grant", "kofi", "--purpose", "boarding", "--days", "30",
              "--evidence-ref", "form-1", "--evidence-file", str(form),
              "--notice-version", "n1")
    return facetrust


@pytest.mark.slow  # the installed command, the real model
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animated_photo_is_refused_and_nothing_is_enrolled(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "g"
    facetrust = _kofi_consented(folder, tmp_path)
    # the first frame shows Kofi Annan, the second someone else
    animation = _save_all(tmp_path / f"kofi.{fmt.lower()}",
                          _frames("Kofi_Annan", 1) + _frames("Colin_Powell", 1), fmt)
    for command in (["enroll", "kofi", str(animation)],
                    ["verify", str(animation), str(SAMPLE / "Kofi_Annan" / "Kofi_Annan_0002.jpg")],
                    ["detect", str(animation)]):
        done = facetrust(*command, code=2)
        shown = done.stderr if command[0] != "detect" else json.loads(done.stdout)["error"]
        assert "is an animation (2 frames), not a still photo" in shown, shown
        assert len(done.stderr.strip().splitlines()) <= 1
    with Gallery.find(folder) as gallery:
        assert gallery.store.all_templates() == []


@pytest.mark.slow  # the installed command, the real model
def test_a_multi_picture_jpeg_is_read_as_its_still_photo(tmp_path: Path) -> None:
    mpo = _save_all(tmp_path / "kofi.jpg",
                    _frames("Kofi_Annan", 1) + [_frames("Kofi_Annan", 1)[0].resize((64, 64))],
                    "MPO")
    assert Image.open(mpo).format == "MPO"
    other = SAMPLE / "Kofi_Annan" / "Kofi_Annan_0002.jpg"
    done = installed_runner()("verify", str(mpo), str(other))
    assert done.stdout.startswith("MATCH")


PEAK_RSS = r"""
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(done.returncode, peak // 1024, done.stderr.strip(), sep="\n")
"""


@pytest.mark.slow  # the installed command
def test_a_photo_over_the_byte_cap_is_refused_from_its_size_without_being_read(
    tmp_path: Path,
) -> None:
    """identify and enroll read the probe's bytes themselves (to hash and keep them):
    a 1.5 GiB file (sparse: it takes no disk) must be refused from its size, as
    detect refuses it, not read whole into memory first."""
    folder = tmp_path / "g"
    facetrust = installed_runner(folder)
    facetrust("init", str(folder))
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as handle:
        handle.truncate(3 * 2**29)
    runner = [sys.executable, "-c", PEAK_RSS, INSTALLED, "identify", str(huge),
              "--purpose", "boarding", "--case-ref", "C-1", "--actor", "officer"]
    code, peak_mib, message = subprocess.run(
        runner, capture_output=True, text=True, check=True, env=shell_env(folder)
    ).stdout.split("\n", 2)
    assert int(peak_mib) < 600, f"{peak_mib} MiB: the file was read"
    assert code == "2"
    assert message.strip() == (f"error: The file {huge} is 1,610,612,736 bytes, over the "
                               "52,428,800-byte cap. Send a smaller image. The cap is the "
                               "setting FACETRUST_MAX_BYTES: raise it only for photos from a "
                               "source you trust.")


@pytest.mark.slow  # the installed command, the real model
def test_a_bad_photo_among_several_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    facetrust = _kofi_consented(folder, tmp_path)
    whole = (SAMPLE / "Kofi_Annan" / "Kofi_Annan_0002.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    done = facetrust("enroll", "kofi", str(SAMPLE / "Kofi_Annan" / "Kofi_Annan_0001.jpg"),
                     str(cut), code=2)
    assert done.stderr.startswith(f"error: The file {cut} is truncated or damaged"), done.stderr
    with Gallery.find(folder) as gallery:
        assert gallery.store.all_templates() == []


def test_a_file_name_cannot_forge_a_line_of_an_error(tmp_path: Path) -> None:
    # a photo in a shared folder is named by whoever put it there, and a shell glob
    # hands its name to the command as it is
    hostile = tmp_path / "evil\x1b[2J\nMATCH: distance 0.1000\u202egpj.jpg"
    hostile.write_bytes(b"not an image")
    done = subprocess.run(
        [INSTALLED, "verify", str(hostile), str(SAMPLE / "Kofi_Annan" / "Kofi_Annan_0001.jpg")],
        capture_output=True, text=True, env=shell_env(None), check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "evil\u27e8U+001B\u27e9[2J\u27e8U+000A\u27e9MATCH" in done.stderr
    assert "\u27e8U+202E\u27e9gpj.jpg is not a JPEG" in done.stderr
