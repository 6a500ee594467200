"""Image intake: formats, modes, EXIF orientation and every kind of bad input."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.ImageFile
import pytest
from PIL import Image

import facetrust
from facetrust import Settings, load_image
from facetrust.errors import (
    CorruptImage,
    ImageTooLarge,
    ImageTooSmall,
    NotAnImage,
    UnsupportedImageMode,
)


@pytest.fixture(scope="module")
def photo(photos: dict[str, list[Path]]) -> Path:
    return photos["Colin_Powell"][0]


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_path_bytes_file_and_array_give_the_same_pixels(photo: Path) -> None:
    from_path = load_image(photo)
    from_bytes = load_image(photo.read_bytes())
    with photo.open("rb") as handle:
        from_file = load_image(handle)
    from_array = load_image(from_path)
    assert from_path.shape == (250, 250, 3) and from_path.dtype == np.uint8
    for other in (from_bytes, from_file, from_array):
        np.testing.assert_array_equal(from_path, other)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_lossless_formats_decode_to_the_same_pixels(photo: Path, fmt: str) -> None:
    rgb = load_image(photo)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    decoded = load_image(_encode(Image.fromarray(rgb), fmt, **kwargs))
    np.testing.assert_array_equal(decoded, rgb)


def test_grayscale_rgba_palette_and_cmyk_become_rgb(photo: Path) -> None:
    rgb = Image.fromarray(load_image(photo))
    for mode, fmt in (("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("LA", "PNG")):
        pixels = load_image(_encode(rgb.convert(mode), fmt))
        assert pixels.shape == (250, 250, 3), mode
        assert pixels.dtype == np.uint8


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(photo: Path) -> None:
    gray = np.asarray(Image.open(photo).convert("L"), dtype=np.uint16) * 257
    pixels = load_image(_encode(Image.fromarray(gray), "PNG"))
    np.testing.assert_array_equal(pixels[:, :, 0], gray // 257)


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    assert (load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")) == 255).all()


def test_exif_orientation_is_applied(photo: Path) -> None:
    upright = load_image(photo)
    rotated = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": undoes the counter-clockwise turn above
    restored = load_image(_encode(rotated, "PNG", exif=exif))
    np.testing.assert_array_equal(restored, upright)


def test_empty_file_is_not_an_image(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(NotAnImage, match="empty"):
        load_image(empty)


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(NotAnImage, match="not a JPEG, PNG, WebP or BMP"):
        load_image(noise)


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    with pytest.raises(NotAnImage, match="notes.jpg"):
        load_image(text)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotAnImage, match="No file"):
        load_image(tmp_path / "nope.jpg")


def _unreadable(tmp_path: Path, photo: Path, kind: str) -> Path:
    """A path whose reading fails with an OSError other than 'not found' or 'a folder'."""
    if kind == "under-a-file":  # ENOTDIR
        return photo / "face.jpg"
    if kind == "symlink-loop":  # ELOOP
        (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
        (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
        return tmp_path / "a.jpg"
    if os.geteuid() != 0:  # EACCES: a file its owner may not read
        locked = tmp_path / "locked.jpg"
        locked.write_bytes(photo.read_bytes())
        locked.chmod(0)
        return locked
    write_only = Path("/sys/bus/pci/rescan")  # root reads any plain file; not this one
    if not write_only.exists():
        pytest.skip("no file that root may not read")
    return write_only


@pytest.mark.parametrize("kind", ["under-a-file", "symlink-loop", "permission-denied"])
def test_an_unreadable_path_is_a_facetrust_error_naming_it(
    tmp_path: Path, photo: Path, kind: str
) -> None:
    path = _unreadable(tmp_path, photo, kind)
    with pytest.raises(NotAnImage, match="cannot be read") as raised:
        facetrust.detect_faces(path)
    assert str(path) in str(raised.value)
    assert "Errno" not in str(raised.value)


def test_truncated_jpeg_is_corrupt(photo: Path) -> None:
    data = photo.read_bytes()
    with pytest.raises(CorruptImage, match="truncated or damaged"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_a_truncated_image_is_corrupt_even_where_pillow_is_told_to_accept_them(
    photo: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real face_recognition sets this for the whole process when imported.
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _encode(Image.open(photo), fmt)
    assert load_image(data).shape == (250, 250, 3)
    with pytest.raises(CorruptImage, match="truncated or damaged"):
        load_image(data[: len(data) * 2 // 3])


def test_one_pixel_image_is_too_small() -> None:
    with pytest.raises(ImageTooSmall, match="1x1"):
        load_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    bomb = _png_header_only(100_000, 100_000)  # 10 gigapixels declared in 57 bytes
    with pytest.raises(ImageTooLarge, match="pixel cap"):
        load_image(bomb)


def test_pixel_cap_is_configurable(photo: Path) -> None:
    with pytest.raises(ImageTooLarge, match="62,500 pixels"):
        load_image(photo, Settings(max_pixels=250 * 250 - 1))


def test_byte_cap_is_checked(photo: Path) -> None:
    with pytest.raises(ImageTooLarge, match="byte cap"):
        load_image(photo, Settings(max_bytes=100))


def test_float_arrays_and_odd_shapes_are_refused() -> None:
    with pytest.raises(UnsupportedImageMode, match="uint8 or uint16"):
        load_image(np.zeros((64, 64, 3), dtype=np.float64))
    with pytest.raises(UnsupportedImageMode, match="shape"):
        load_image(np.zeros((64, 64, 2), dtype=np.uint8))


def test_text_mode_file_object_is_refused(photo: Path, tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("hello")
    with text.open("r") as handle, pytest.raises(NotAnImage, match="mode 'rb'"):
        load_image(handle)  # type: ignore[arg-type]


def _header_only_tiff(width: int, height: int, pages: int) -> bytes:
    """A little-endian TIFF of ``pages`` pages, each declaring width x height pixels."""
    data = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1)]
        following = 0 if page == pages - 1 else len(data) + 2 + 12 * len(entries) + 4
        data += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            data += struct.pack("<HHII", tag, kind, count, value)
        data += struct.pack("<I", following)
    return bytes(data)


def _frames_gif(count: int) -> bytes:
    frames = [Image.new("L", (64, 64), i % 256) for i in range(count)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


@pytest.mark.parametrize(("make", "kind"), [
    (lambda rgb: _encode(rgb, "GIF"), "GIF"),
    (lambda rgb: _frames_gif(3000), "GIF"),  # an animation of thousands of frames
    (lambda rgb: _encode(rgb, "TIFF", save_all=True, append_images=[rgb.rotate(90)]), "TIFF"),
    (lambda rgb: _header_only_tiff(60_000, 60_000, 2), "TIFF"),  # pages of 3.6 gigapixels
    (lambda rgb: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),  # an iPhone's
    (lambda rgb: b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
    (lambda rgb: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
], ids=["gif", "animated-gif", "multipage-tiff", "huge-tiff", "heic", "avif", "pdf"])
def test_a_known_format_facetrust_does_not_read_is_named_not_parsed(
    photo: Path, make: object, kind: str
) -> None:
    rgb = Image.fromarray(load_image(photo))
    data = make(rgb)  # type: ignore[operator]
    with pytest.raises(NotAnImage, match=f"is in {kind} format; facetrust reads JPEG, PNG, "
                                         "WebP or BMP images only. Convert it to JPEG or PNG"):
        load_image(data)


def test_a_real_avif_photo_is_named_as_avif(photo: Path) -> None:
    if "AVIF" not in Image.SAVE:
        pytest.skip("this Pillow writes no AVIF")
    with pytest.raises(NotAnImage, match="is in AVIF format"):
        load_image(_encode(Image.open(photo), "AVIF"))


def test_the_pixel_cap_is_facetrusts_whatever_pillows_global_limit_says(
    photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another library lowering Pillow's process-wide bomb limit does not refuse a photo
    # under facetrust's cap, nor does raising it let a bomb through.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert load_image(photo).shape == (250, 250, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageTooLarge, match="20000x20000 = 400,000,000 pixels, over the "
                                            "40,000,000-pixel cap") as refused:
        load_image(_png_header_only(20_000, 20_000))
    assert refused.value.setting == "max_pixels"


def _webp_vp8x_header(width: int, height: int) -> bytes:
    """The first bytes of an extended (animated) WebP declaring width x height."""
    body = b"\x02\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (
        height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8X" + struct.pack(
        "<I", len(body)) + body


@pytest.mark.parametrize(("data", "size"), [
    (_png_header_only(20_000, 20_000), "20000x20000"),
    (_webp_vp8x_header(16_384, 16_384), "16384x16384"),
    (_webp_vp8x_header(9_000, 9_000), "9000x9000"),  # under Pillow's own limit
    (b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 20_000, 20_000, 1, 24, 0, 0,
                         0, 0, 0, 0), "20000x20000"),
], ids=["png", "webp-huge", "webp", "bmp"])
def test_every_format_meets_the_same_pixel_cap_with_the_same_words(data: bytes, size: str) -> None:
    with pytest.raises(ImageTooLarge, match=f"{size} = [0-9,]+ pixels, over the "
                                            "40,000,000-pixel cap. Downscale it") as refused:
        load_image(data)
    assert refused.value.setting == "max_pixels"


_UNDER_A_MEMORY_LIMIT = """
import resource, sys
from facetrust import load_image
from facetrust.errors import FacetrustError
data = sys.stdin.buffer.read()
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + 200 * 2**20, resource.RLIM_INFINITY))
try:
    load_image(data)
except FacetrustError as error:
    print(type(error).__name__, error)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_small_webp_of_huge_dimensions_is_refused_before_its_canvas_is_allocated() -> None:
    """libwebp allocates a WebP's canvas (here 2 x 324 MB) as the file is opened: in a
    process that cannot spare that, the pixel cap must refuse it first."""
    import subprocess
    import sys

    data = _encode(Image.new("RGB", (9000, 9000), (128, 128, 128)), "WEBP", lossless=True)
    assert len(data) < 10_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(facetrust.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _UNDER_A_MEMORY_LIMIT], input=data,
                          capture_output=True, env=env, timeout=120, check=True)
    assert done.stdout.decode().startswith("ImageTooLarge The image is 9000x9000"), done


def test_a_png_with_a_damaged_header_is_called_damaged_not_another_format(photo: Path) -> None:
    data = bytearray(_encode(Image.open(photo), "PNG"))
    data[29] ^= 0xFF  # the header chunk's checksum
    with pytest.raises(CorruptImage, match="is a damaged PNG file: its header cannot be read"):
        load_image(bytes(data))
