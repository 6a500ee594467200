"""Why a batch photo failed, through the installed command: each kind of unusable photo
(not an image, truncated, a decompression bomb, an image or a face too small) has its
own reason in the run's result and in ``enroll-batch status``, never a catch-all; and a
photo whose file name is not UTF-8 (bytes on Linux) is enrolled or reported under a
readable name, the same in the result, the status and the message, without a crash."""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from PIL import Image

from facetrust.gallery import Gallery
from installed_command import installed_runner

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"
KOFI = sorted((SAMPLE / "Kofi_Annan").glob("*.jpg"))
COLUMNS = ("photo", "subject_id", "display_name", "purposes", "expires", "evidence_ref",
           "evidence_sha256", "notice_version")

Runner = Callable[..., CompletedProcess[str]]

pytestmark = pytest.mark.slow  # the installed command, the real model


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _decompression_bomb_png(side: int = 40_000) -> bytes:
    """A real 1-bit PNG of ``side`` x ``side`` black pixels (1.6 billion by default) that
    compresses to a few hundred kilobytes."""
    row = b"\x00" * (1 + side // 8)  # filter byte, then the row's bits
    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
            + _png_chunk(b"IEND", b""))


def _downscaled(photo: Path, side: int, path: Path) -> None:
    Image.open(photo).resize((side, side), Image.Resampling.LANCZOS).save(path, quality=95)


def _write_consents(path: Path, photos: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for photo in photos:
            subject = photo.split(".")[0]
            writer.writerow([photo, subject, "", "boarding", "2030-01-01", f"form-{subject}",
                             "ab" * 32, "n1"])


#: Each photo of the folder the reason test builds, and the reason it must fail with.
EXPECTED = {
    "text.jpg": "unreadable",  # not an image at all
    "cut.jpg": "corrupt-image",  # a real photo, truncated
    "bomb.png": "image-too-large",  # declares 1.6 billion pixels
    "tiny.jpg": "image-too-small",  # 24x24 pixels: too small to hold a face
    "distant.jpg": "face-too-small",  # a face found, 7 px between the eyes
}


@pytest.fixture
def failing_photos(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of one good photo and one photo per failure of :data:`EXPECTED`, and
    its consent CSV."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(KOFI[0].read_bytes())
    (folder / "text.jpg").write_text("not a photo")
    (folder / "cut.jpg").write_bytes(KOFI[1].read_bytes()[:6000])
    (folder / "bomb.png").write_bytes(_decompression_bomb_png())
    _downscaled(KOFI[2], 24, folder / "tiny.jpg")
    _downscaled(KOFI[3], 40, folder / "distant.jpg")
    consents = tmp_path / "consents.csv"
    _write_consents(consents, ["good.jpg", *EXPECTED])
    return folder, consents


def test_each_unusable_photo_has_its_own_reason_in_the_result_and_the_status(
    tmp_path: Path, failing_photos: tuple[Path, Path]
) -> None:
    folder, consents = failing_photos
    gallery_dir = tmp_path / "g"
    facetrust = installed_runner(gallery_dir)
    facetrust("init", str(gallery_dir))

    done = facetrust("enroll-batch", str(folder), "--consents", str(consents), "--actor",
                     "registrar", "--workers", "1", "--no-progress")
    result = json.loads(done.stdout)
    assert result["enrolled"] == 1
    reasons = {Path(f["photo"]).name: f["reason"] for f in result["failures"]}
    assert reasons == EXPECTED
    assert result["failures_by_reason"] == {reason: 1 for reason in EXPECTED.values()}
    for reason in EXPECTED.values():
        assert reason in done.stderr  # the table
    messages = {Path(f["photo"]).name: f["message"] for f in result["failures"]}
    assert "between the eyes" in messages["distant.jpg"]
    # the operator runs the batch: told which setting is the cap
    assert "FACETRUST_MAX_PIXELS" in messages["bomb.png"]

    # the same reasons through a queue, and in its status
    queue_dir = tmp_path / "q"
    facetrust = installed_runner(queue_dir)
    facetrust("init", str(queue_dir))
    done = facetrust("enroll-batch", str(folder), "--consents", str(consents), "--actor",
                     "registrar", "--queue", "intake")
    assert {f["photo"]: f["reason"] for f in json.loads(done.stdout)["failures"]} == EXPECTED
    status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
    assert {f["photo"]: f["reason"] for f in status["failures"]} == EXPECTED
    assert status["done"] == 1
    table = facetrust("enroll-batch", "status").stdout
    for photo, reason in EXPECTED.items():
        assert f"{photo}  [{reason}]" in table
    events = [json.loads(line) for line in facetrust("audit", "export").stdout.splitlines()]
    batch = [e for e in events if e["kind"] == "enrol.batch"]
    assert batch[-1]["failures_by_reason"] == {reason: 1 for reason in EXPECTED.values()}


def test_a_photo_named_in_bytes_that_are_not_utf8_is_enrolled_or_reported_readably(
    tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "kofi").mkdir(parents=True)
    raw_folder = os.fsencode(folder)
    (folder / "kofi" / "a.jpg").write_bytes(KOFI[0].read_bytes())
    # Latin-1 names, as an old camera or a Windows share writes them
    with open(raw_folder + b"/kofi/caf\xe9.jpg", "wb") as handle:
        handle.write(KOFI[1].read_bytes())
    with open(raw_folder + b"/kofi/bad\xff.jpg", "wb") as handle:
        handle.write(b"not a photo")
    with open(raw_folder + b"/na\xefve.jpg", "wb") as handle:  # in no row of the CSV
        handle.write(KOFI[2].read_bytes())
    consents = tmp_path / "consents.csv"
    _write_consents(consents, ["kofi"])
    expected = {"kofi/bad\\xff.jpg": "unreadable", "na\\xefve.jpg": "no-consent-in-csv"}

    gallery_dir = tmp_path / "g"
    facetrust = installed_runner(gallery_dir)
    facetrust("init", str(gallery_dir))
    done = facetrust("enroll-batch", str(folder), "--consents", str(consents), "--actor",
                     "registrar", "--workers", "1", "--no-progress")
    result = json.loads(done.stdout)
    assert result["enrolled"] == 2  # a.jpg and caf\xe9.jpg
    shown = {Path(f["photo"]).relative_to(folder).as_posix(): f for f in result["failures"]}
    assert {photo: f["reason"] for photo, f in shown.items()} == expected
    assert "kofi/bad\\xff.jpg" in shown["kofi/bad\\xff.jpg"]["message"]
    assert "\\udc" not in done.stdout + done.stderr  # no Python surrogate escapes

    queue_dir = tmp_path / "q"
    facetrust = installed_runner(queue_dir)
    facetrust("init", str(queue_dir))
    done = facetrust("enroll-batch", str(folder), "--consents", str(consents), "--actor",
                     "registrar", "--queue", "intake")
    assert json.loads(done.stdout)["enrolled"] == 2
    status = facetrust("enroll-batch", "status", "--json")
    failures = {f["photo"]: f for f in json.loads(status.stdout)["failures"]}
    assert {photo: f["reason"] for photo, f in failures.items()} == expected
    assert "kofi/bad\\xff.jpg" in failures["kofi/bad\\xff.jpg"]["message"]
    table = facetrust("enroll-batch", "status").stdout
    assert "kofi/bad\\xff.jpg  [unreadable]" in table and "na\\xefve.jpg  [no-consent" in table
    audit = facetrust("audit", "export").stdout
    assert "\\udc" not in status.stdout + table + audit
    # a second worker of the same queue finds every photo done or failed
    again = json.loads(facetrust("enroll-batch", str(folder), "--consents", str(consents),
                                 "--actor", "registrar", "--queue", "intake").stdout)
    assert again["enrolled"] == 0 and again["failed_elsewhere"] == 2
    with Gallery.find(queue_dir) as gallery:
        assert gallery.list_subjects()[0].template_count == 2
        assert gallery.audit.verify().ok
