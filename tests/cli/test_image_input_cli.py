"""Photos that are not still photos, through the installed command: an animated PNG or
WebP is refused in one line, naming the frames, before anything is written (which
frame would be the face?), while a phone's multi-picture JPEG (MPO), a still photo
with a second, smaller view, is read as the still photo it is."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from facetrust.gallery import Gallery
from installed_command import installed_runner

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"


def _frames(name: str, number: int) -> list[Image.Image]:
    return [Image.open(SAMPLE / name / f"{name}_{number:04d}.jpg").convert("RGB")]


def _save_all(path: Path, frames: list[Image.Image], fmt: str) -> Path:
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.slow  # the installed command, the real model
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animated_photo_is_refused_and_nothing_is_enrolled(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "g"
    facetrust = installed_runner(folder)
    facetrust("init", str(folder))
    form = tmp_path / "form.txt"
    form.write_text("signed")
    facetrust("subject", "add", "kofi")
    facetrust("consent", "grant", "kofi", "--purpose", "boarding", "--days", "30",
              "--evidence-ref", "form-1", "--evidence-file", str(form),
              "--notice-version", "n1")
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
