"""Every kind of image file a user may hand in, through every entry point.

One real LFW photo is turned, here, into the files people send: PNG, WebP, BMP,
progressive, CMYK and ICC-tagged JPEG, grayscale and 16-bit PNG, a palette PNG
with transparency, RGBA on a transparent background, and JPEGs whose EXIF
Orientation (3, 6, 8) undoes a turn of their pixels; and into files refused:
GIF (still, and an animation of thousands of frames), multi-page TIFF, TIFF
pages of gigapixels, and small files declaring huge PNG and WebP canvases.

Each goes through the library, the installed command (``embed``, ``enroll``,
``verify``), batch enrolment with two worker processes, a real server on
loopback (enrol, verify, identify), the console's upload and the gate's frame
folder. Every entry point must store or hand back the library's template (a
stored one within :data:`STORED`, see ``tests/test_one_pipeline.py``) or refuse
with the library's own words, storing nothing.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

import facetrust
from facetrust import Settings, load_image
from facetrust.errors import FacetrustError, FrameSourceError
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gate.frames import read_frames
from facetrust.service import Role
from gallery_fixtures import EVIDENCE_SHA256, consent
from installed_command import installed_runner
from service.conftest import LiveServer, add_consented_subject, start_server, stop_server
from service.test_console_edges import csrf_of, logged_in

pytestmark = pytest.mark.slow  # the installed command, a server, worker processes

PHOTO = Path(__file__).parent / "data" / "lfw" / "Colin_Powell" / "Colin_Powell_0001.jpg"
#: Distance between a stored (turned, float32) template and the template it was made from.
STORED = 1e-6
PURPOSE = "boarding"
#: EXIF Orientation -> the turn of the stored pixels it undoes (np.rot90's k).
ORIENTATIONS = {3: 2, 6: -1, 8: 1}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _huge_png() -> bytes:
    """57 bytes declaring a 20000x20000 RGB PNG (400 megapixels)."""
    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def _huge_webp() -> bytes:
    """An animated WebP's header declaring a 16384x16384 canvas."""
    body = b"\x02\x00\x00\x00" + (16_383).to_bytes(3, "little") * 2
    return (b"RIFF" + struct.pack("<I", 12 + len(body)) + b"WEBP" + b"VP8X"
            + struct.pack("<I", len(body)) + body)


def _huge_tiff() -> bytes:
    """A TIFF of two pages, each declaring 60000x60000 pixels."""
    data = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(2):
        following = 0 if page else len(data) + 2 + 4 * 12 + 4
        data += struct.pack("<H", 4)
        for tag, kind, value in ((256, 4, 60_000), (257, 4, 60_000), (258, 3, 8), (262, 3, 1)):
            data += struct.pack("<HHII", tag, kind, 1, value)
        data += struct.pack("<I", following)
    return bytes(data)


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


def make_accepted(folder: Path) -> dict[str, Path]:
    """The photo in every form facetrust reads, by file name."""
    rgb = Image.open(PHOTO).convert("RGB")
    clear = np.asarray(rgb.convert("RGBA")).copy()
    clear[:, :40, 3] = 0  # a transparent background band
    palette = rgb.convert("P")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    files = {
        "photo.png": _save(rgb, folder / "photo.png"),
        "photo.webp": _save(rgb, folder / "photo.webp", lossless=True),
        "photo.bmp": _save(rgb, folder / "photo.bmp"),
        "progressive.jpg": _save(rgb, folder / "progressive.jpg", progressive=True, quality=95),
        "cmyk.jpg": _save(rgb.convert("CMYK"), folder / "cmyk.jpg", quality=95),
        "icc.jpg": _save(rgb, folder / "icc.jpg", icc_profile=srgb, quality=95),
        "gray.png": _save(rgb.convert("L"), folder / "gray.png"),
        "gray16.png": _save(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257),
                            folder / "gray16.png"),
        "palette.png": _save(palette, folder / "palette.png", transparency=0),
        "rgba.png": _save(Image.fromarray(clear), folder / "rgba.png"),
    }
    for orientation, turns in ORIENTATIONS.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        turned = Image.fromarray(np.rot90(np.asarray(rgb), k=-turns).copy())
        name = f"exif{orientation}.jpg"
        files[name] = _save(turned, folder / name, exif=exif, quality=95)
    return files


def make_refused(folder: Path) -> dict[str, Path]:
    """Files facetrust refuses, by file name (``gif-named.jpg``: a GIF with a JPEG's
    name, which batch enrolment, going by names, reads too)."""
    rgb = Image.open(PHOTO).convert("RGB")
    frames = [Image.new("L", (64, 64), i % 256) for i in range(3000)]
    gif = folder / "still.gif"
    _save(rgb, gif)
    files = {
        "still.gif": gif,
        "animated.gif": _save(frames[0], folder / "animated.gif", save_all=True,
                              append_images=frames[1:], duration=40),
        "pages.tiff": _save(rgb, folder / "pages.tiff", save_all=True,
                            append_images=[rgb.rotate(90)]),
        "huge-pages.tiff": folder / "huge-pages.tiff",
        "huge.png": folder / "huge.png",
        "huge.webp": folder / "huge.webp",
        "gif-named.jpg": folder / "gif-named.jpg",
    }
    files["huge-pages.tiff"].write_bytes(_huge_tiff())
    files["huge.png"].write_bytes(_huge_png())
    files["huge.webp"].write_bytes(_huge_webp())
    shutil.copy(gif, files["gif-named.jpg"])
    return files


def words(message: str) -> str:
    """``message`` less the name it gives the image ("The file /x/a.gif", "The image")."""
    return re.sub(r"^(The file \S+|The image) ", "", message)


def at_the_services_cap(said: str) -> str:
    """The library's words with the service's pixel cap (25 MP) for the library's (40 MP):
    the lower of the two holds there (``Settings.capped``)."""
    return said.replace("40,000,000-pixel cap", "25,000,000-pixel cap")


@dataclass
class Reference:
    """What the library makes of each file: a template, or a refusal's class and words."""

    accepted: dict[str, Path]
    refused: dict[str, Path]
    templates: dict[str, Embedding]
    refusals: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("image-inputs")
    accepted, refused = make_accepted(folder), make_refused(folder)
    pipeline = facetrust.default_pipeline()
    templates = {name: pipeline.embed_one(path).embedding for name, path in accepted.items()}
    refusals = {}
    for name, path in refused.items():
        with pytest.raises(FacetrustError) as error:
            pipeline.embed_one(path)
        refusals[name] = (type(error.value).__name__, words(str(error.value)))
    return Reference(accepted, refused, templates, refusals)


def assert_stored(gallery: Gallery, reference: Reference, subjects: dict[str, str]) -> None:
    """``gallery`` holds the library's template of each file (file name -> subject)."""
    for name, subject_id in subjects.items():
        hits = gallery.search(reference.templates[name], purpose=PURPOSE, k=50).hits
        nearest = {h.subject_id: h.distance for h in hits}
        assert nearest[subject_id] <= STORED, (name, nearest.get(subject_id))


def test_the_library_reads_each_form_as_the_photo_and_refuses_the_rest_in_words(
    reference: Reference,
) -> None:
    raw = {n: np.asarray(Image.open(p).convert("RGB")) for n, p in reference.accepted.items()}
    for orientation, turns in ORIENTATIONS.items():  # applied once: upright, not turned back
        name = f"exif{orientation}.jpg"
        np.testing.assert_array_equal(load_image(reference.accepted[name]),
                                      np.rot90(raw[name], k=turns))
    for lossless in ("photo.webp", "photo.bmp", "rgba.png"):
        assert reference.templates[lossless].vector.tolist() == \
            reference.templates["photo.png"].vector.tolist(), lossless
    for name in ("exif3.jpg", "exif6.jpg", "exif8.jpg", "gray.png", "palette.png"):
        distance = float(np.linalg.norm(reference.templates[name].vector
                                        - reference.templates["photo.png"].vector))
        assert distance < 0.3, (name, distance)  # the same face, whatever the encoding
    kinds = {n: k for n, (k, _) in reference.refusals.items()}
    assert kinds == {"still.gif": "NotAnImage", "animated.gif": "NotAnImage",
                     "pages.tiff": "NotAnImage", "huge-pages.tiff": "NotAnImage",
                     "gif-named.jpg": "NotAnImage", "huge.png": "ImageTooLarge",
                     "huge.webp": "ImageTooLarge"}
    assert "in GIF format" in reference.refusals["animated.gif"][1]
    assert "in TIFF format" in reference.refusals["huge-pages.tiff"][1]
    assert reference.refusals["huge.webp"][1].startswith("is 16384x16384 = 268,435,456 pixels")


def test_the_installed_command_embeds_enrols_and_verifies_as_the_library_does(
    tmp_path: Path, reference: Reference
) -> None:
    folder = tmp_path / "g"
    command = installed_runner(folder, FACETRUST_ACTOR="registrar")
    every = {**reference.accepted, **reference.refused}
    lines = [json.loads(line) for line in command(
        "embed", *map(str, every.values()), code=2).stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines] == list(every)
    for name, line in zip(every, lines, strict=True):
        if name in reference.templates:
            (face,) = line["faces"]
            assert np.array_equal(np.asarray(face["embedding"]["vector"], np.float32),
                                  reference.templates[name].vector), name
        else:
            assert (line["error_type"], words(line["error"])) == reference.refusals[name], name

    command("init", str(folder))
    command("subject", "add", "colin")
    form = tmp_path / "form.txt"
    form.write_text("signed")
    command("consent", "grant", "colin", "--purpose", PURPOSE, "--days", "30",
            "--evidence-ref", "form-1", "--evidence-file", str(form), "--notice-version", "n1")
    for name, path in reference.refused.items():
        refused = command("enroll", "colin", str(path), code=2)
        assert reference.refusals[name][1] in refused.stderr, (name, refused.stderr)
    with Gallery.find(folder) as gallery:
        assert gallery.parts.store.templates_of("colin") == []  # nothing stored
    command("enroll", "colin", str(reference.accepted["exif6.jpg"]))
    with Gallery.find(folder) as gallery:
        assert_stored(gallery, reference, {"exif6.jpg": "colin"})

    for name in ("exif3.jpg", "exif8.jpg", "cmyk.jpg"):
        verdict = json.loads(command("verify", str(reference.accepted["photo.png"]),
                                     str(reference.accepted[name]), "--json").stdout)
        library = facetrust.verify(reference.accepted["photo.png"], reference.accepted[name])
        assert verdict["distance"] == pytest.approx(library.distance, abs=STORED), name
    refused = command("verify", str(reference.accepted["photo.png"]),
                      str(reference.refused["animated.gif"]), code=2)
    assert reference.refusals["animated.gif"][1] in refused.stderr
    assert refused.stderr.rstrip().endswith("(argument IMAGE_B)")  # which of the two


def test_the_byte_cap_and_the_pixel_cap_say_which_was_met(
    tmp_path: Path, reference: Reference
) -> None:
    command = installed_runner(FACETRUST_MAX_BYTES="20000")
    lines = [json.loads(line) for line in command(
        "embed", str(reference.accepted["photo.bmp"]), str(reference.refused["huge.png"]),
        code=2).stdout.splitlines()]
    assert [line["error_type"] for line in lines] == ["ImageTooLarge", "ImageTooLarge"]
    assert "over the 20,000-byte cap" in lines[0]["error"]
    assert "over the 40,000,000-pixel cap" in lines[1]["error"]


def test_batch_enrolment_workers_store_the_librarys_templates_and_refuse_its_way(
    tmp_path: Path, reference: Reference
) -> None:
    folder = tmp_path / "g"
    photos = tmp_path / "photos"
    photos.mkdir()
    named = {**reference.accepted,
             **{n: p for n, p in reference.refused.items() if n.endswith((".png", ".jpg",
                                                                        ".webp"))}}
    subjects = {name: f"s{number}" for number, name in enumerate(named)}
    for name, path in named.items():
        shutil.copy(path, photos / name)
    consents = tmp_path / "consents.csv"
    consents.write_text(
        "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,"
        "notice_version\n" + "".join(
            f"{name},{subject},,{PURPOSE},2099-01-01,form-{subject},{EVIDENCE_SHA256},n1\n"
            for name, subject in subjects.items()))
    command = installed_runner(folder, FACETRUST_ACTOR="registrar")
    command("init", str(folder))
    done = command("enroll-batch", "run", str(photos), "--consents", str(consents),
                   "--workers", "2", "--no-progress")
    result = json.loads(done.stdout)
    failed = {Path(f["photo"]).name: f for f in result["failures"]}
    assert set(failed) == {"huge.png", "huge.webp", "gif-named.jpg"}, failed
    for name, failure in failed.items():
        assert reference.refusals[name][1] in failure["message"], (name, failure)
    assert {failed[n]["reason"] for n in ("huge.png", "huge.webp")} == {"image-too-large"}
    with Gallery.find(folder) as gallery:
        assert_stored(gallery, reference, {n: subjects[n] for n in reference.accepted})
        for name in failed:
            assert gallery.parts.store.templates_of(subjects[name]) == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("image-inputs-service"),
                           {"enroller": Role.ENROLLER, "operator": Role.OPERATOR},
                           env={"FACETRUST_SERVICE_IDENTIFY_BURST": "200"})
    yield started
    stop_server(started)


def _upload(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "application/octet-stream")


def test_the_rest_service_enrols_verifies_and_identifies_as_the_library_does(
    server: LiveServer, reference: Reference
) -> None:
    subjects = {name: f"rest-{number}" for number, name in enumerate(reference.accepted)}
    form = {"purpose": PURPOSE, "case_ref": "case-images"}
    with server.client("enroller") as enroller:
        add_consented_subject(enroller, "rest-refused", (PURPOSE,))
        for name, path in reference.refused.items():
            answer = enroller.post("/v1/subjects/rest-refused/enrolments",
                                   files={"photo": _upload(path)})
            kind, said = reference.refusals[name]
            assert answer.status_code == (415 if kind == "NotAnImage" else 413), answer.text
            assert words(answer.json()["detail"]) == at_the_services_cap(said), name
        for name, subject in subjects.items():
            add_consented_subject(enroller, subject, (PURPOSE,))
            answer = enroller.post(f"/v1/subjects/{subject}/enrolments",
                                   files={"photo": _upload(reference.accepted[name])})
            assert answer.status_code == 201, (name, answer.text)
    with Gallery.find(server.folder) as gallery:
        assert gallery.parts.store.templates_of("rest-refused") == []
        assert_stored(gallery, reference, subjects)

    png = reference.accepted["photo.png"]
    with server.client("operator") as operator:
        for name in ("exif6.jpg", "gray16.png", "palette.png"):
            answer = operator.post("/v1/verify", data=form, files={
                "image_a": _upload(png), "image_b": _upload(reference.accepted[name])})
            assert answer.status_code == 200, answer.text
            library = facetrust.verify(png, reference.accepted[name])
            assert answer.json()["distance"] == round(library.distance, 4), name
            found = operator.post("/v1/identify", data=form,
                                  files={"image": _upload(reference.accepted[name])})
            assert found.status_code == 200, found.text
            assert subjects[name] in {c["subject_id"] for c in found.json()["candidates"]}
        for name in ("animated.gif", "huge.webp"):
            for route, field in (("/v1/verify", "image_b"), ("/v1/identify", "image")):
                files = {field: _upload(reference.refused[name])}
                if field == "image_b":
                    files["image_a"] = _upload(png)
                answer = operator.post(route, data=form, files=files)
                said = at_the_services_cap(reference.refusals[name][1])
                assert words(answer.json()["detail"]) == said, route
                # of two photos, which one was refused
                assert answer.json().get("field") == ("image_b" if field == "image_b"
                                                      else None), answer.json()

    big = io.BytesIO()  # over the test server's 2 MB body cap, under its pixel cap
    Image.effect_noise((1100, 1100), 64).convert("RGB").save(big, "BMP")
    with server.client("enroller") as enroller:
        over = enroller.post("/v1/subjects/rest-refused/enrolments",
                             files={"photo": ("big.bmp", big.getvalue(), "image/bmp")})
    assert over.status_code == 413 and over.json()["type"].endswith("/body-too-large")
    assert "request body is larger than" in over.json()["detail"]


def _page_text(page: str) -> str:
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(text))


def test_the_console_upload_refuses_in_the_librarys_words_and_enrols_its_template(
    server: LiveServer, reference: Reference
) -> None:
    with server.client("enroller") as enroller:
        add_consented_subject(enroller, "console-colin", (PURPOSE,))
    with logged_in(server, "enroller") as browser:
        for name, path in reference.refused.items():
            answer = browser.post("/console/enrol", files={"photo": _upload(path)}, data={
                "subject_id": "console-colin", "csrf": csrf_of(browser, "/console/enrol")})
            kind, said = reference.refusals[name]
            assert answer.status_code == (415 if kind == "NotAnImage" else 413), name
            assert at_the_services_cap(said) in _page_text(answer.text), name
        answer = browser.post(
            "/console/enrol", files={"photo": _upload(reference.accepted["exif8.jpg"])},
            data={"subject_id": "console-colin", "csrf": csrf_of(browser, "/console/enrol")})
        assert answer.status_code == 201, _page_text(answer.text)[:500]
    with logged_in(server, "operator") as browser:
        png = reference.accepted["photo.png"]
        answer = browser.post(
            "/console/verify",
            files={"image_a": _upload(png), "image_b": _upload(reference.refused["still.gif"])},
            data={"purpose": PURPOSE, "case_ref": "case-c",
                  "csrf": csrf_of(browser, "/console/verify")})
        assert answer.status_code == 415
        assert f"Photo B: The image {reference.refusals['still.gif'][1]}" in _page_text(
            answer.text)  # of two photos, which one was refused
        answer = browser.post(
            "/console/identify", files={"image": _upload(reference.refused["huge-pages.tiff"])},
            data={"purpose": PURPOSE, "case_ref": "case-c",
                  "csrf": csrf_of(browser, "/console/identify")})
        assert answer.status_code == 415
        assert reference.refusals["huge-pages.tiff"][1] in _page_text(answer.text)
    with Gallery.find(server.folder) as gallery:
        assert_stored(gallery, reference, {"exif8.jpg": "console-colin"})
        assert len(gallery.parts.store.templates_of("console-colin")) == 1


def test_the_gates_frame_folder_reads_each_form_as_the_library_does(
    tmp_path: Path, reference: Reference
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for number, (name, path) in enumerate(reference.accepted.items()):
        shutil.copy(path, frames / f"{number:04d}-{name}")
    read = list(read_frames(frames, settings=Settings()))
    assert len(read) == len(reference.accepted)
    for frame, path in zip(read, reference.accepted.values(), strict=True):
        np.testing.assert_array_equal(frame.pixels, load_image(path))
    for name in ("huge.png", "huge.webp", "gif-named.jpg"):
        bad = tmp_path / f"bad-{name}"
        bad.mkdir()
        shutil.copy(reference.refused[name], bad / name)
        with pytest.raises(FrameSourceError) as refused:
            list(read_frames(bad, settings=Settings()))
        assert reference.refusals[name][1] in str(refused.value), name


def test_a_consented_gallery_keeps_nothing_of_a_refused_file(
    tmp_path: Path, reference: Reference
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path / "g")
    with gallery:
        gallery.add_subject("colin", actor="registrar")
        consent(gallery, "colin", (PURPOSE,))
        for name, path in reference.refused.items():
            with pytest.raises(FacetrustError) as refused:
                gallery.enroll("colin", [reference.accepted["photo.png"], path],
                               actor="registrar")
            assert words(str(refused.value)) == reference.refusals[name][1]
            assert gallery.parts.store.templates_of("colin") == []  # not even the good one


def test_a_photo_with_damaged_exif_leaves_no_python_warning_on_the_commands_stderr(
    tmp_path: Path, reference: Reference
) -> None:
    data = bytearray(reference.accepted["exif6.jpg"].read_bytes())
    at = data.find(b"\x01\x12\x00\x03")  # the Orientation entry (big-endian EXIF)
    assert at > 0
    data[at + 4:at + 8] = (100_000).to_bytes(4, "big")  # its count: past the file's end
    damaged = tmp_path / "damaged-exif.jpg"
    damaged.write_bytes(bytes(data))
    done = installed_runner()("verify", str(damaged), str(reference.accepted["photo.png"]),
                              code=2)  # read as it is stored (sideways): no face found
    assert done.stderr.startswith("error: No face was found"), done.stderr
    assert "Warning" not in done.stderr and "warnings.warn" not in done.stderr
