"""Turning files, bytes and arrays into RGB pixel arrays, safely.

Every input passes the same gate: a byte cap, a format allow-list (a known
image format outside it, such as GIF, TIFF or HEIC, is named in the refusal
and never parsed), a pixel cap checked from the header before decoding (so a
decompression bomb never allocates its pixels; the cap is facetrust's
``max_pixels`` alone, not Pillow's process-wide ``MAX_IMAGE_PIXELS``), still
photos only (no animation), EXIF orientation, and conversion of grayscale,
palette, alpha, CMYK and 16-bit images to 8-bit RGB.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import BinaryIO, Union

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from .config import Settings
from .errors import (
    CorruptImage,
    ImageTooLarge,
    ImageTooSmall,
    NotAnImage,
    UnsupportedImageMode,
)
from .text import readable_path, shown

#: Anything :func:`load_image` accepts: a path, encoded bytes, a binary file
#: object, or an RGB/grayscale numpy array (RGB channel order, not OpenCV's BGR).
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO, npt.NDArray[np.generic]]

RGBImage = npt.NDArray[np.uint8]

#: Pillow format names accepted. MPO is the multi-picture JPEG many phones write.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP")

#: File name suffixes of the formats in :data:`SUPPORTED_FORMATS`, lower case: what
#: a folder read as photos (a frame folder, a batch of photos) takes for one.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

#: Image formats people hand in that facetrust does not read, by their first bytes:
#: named in the refusal, never parsed (an animated GIF of thousands of frames or a
#: TIFF of huge pages costs nothing to refuse). ``(offset, magic, name)``.
_OTHER_FORMATS = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypheim", "HEIC"),
    (4, b"ftypheis", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypmsf1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"8BPS", "Photoshop (PSD)"),
    (0, b"%PDF-", "PDF"),
)

#: How a format of :data:`SUPPORTED_FORMATS` is named to people, where not as Pillow does.
_FORMAT_NAMES = {"MPO": "JPEG", "WEBP": "WebP"}

#: Smallest side, in pixels, of an image that can hold a usable face.
MIN_IMAGE_SIDE = 32


def load_image(source: ImageSource, settings: Settings | None = None) -> RGBImage:
    """Decode ``source`` into an 8-bit RGB array of shape (height, width, 3).

    Parameters
    ----------
    source : path, bytes, binary file object or numpy array
        Encoded JPEG, PNG, WebP or BMP data, or pixels already decoded (uint8
        or uint16; shape (h, w), (h, w, 1), (h, w, 3) RGB or (h, w, 4) RGBA).
    settings : Settings, optional
        Supplies ``max_bytes`` and ``max_pixels``.

    Returns
    -------
    ndarray of shape (height, width, 3), dtype uint8, C-contiguous.

    Raises
    ------
    NotAnImage, CorruptImage, ImageTooLarge, ImageTooSmall, UnsupportedImageMode
    """
    settings = settings or Settings.from_env()
    if isinstance(source, np.ndarray):
        pixels = _array_to_rgb(source)
    else:
        data, name = _read_bytes(source, settings.max_bytes)
        pixels = _decode(data, name, settings.max_pixels)
    _check_dimensions(pixels.shape[1], pixels.shape[0], settings.max_pixels)
    return np.ascontiguousarray(pixels)


def _read_bytes(source: ImageSource, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray):
        data, name = bytes(source), "The image"
    elif isinstance(source, str | os.PathLike):
        data, name = read_image_file(source, max_bytes), f"The file {_named(source)}"
    elif hasattr(source, "read"):
        name = f"The file {shown(str(getattr(source, 'name', 'object')))}"
        data = source.read(max_bytes + 1)
        if not isinstance(data, bytes):
            raise NotAnImage(f"{name} was opened in text mode; open it with mode 'rb'.")
    else:
        raise NotAnImage(
            "Expected a path, bytes, a binary file object or a numpy array. "
            f"Got {type(source).__name__} instead."
        )
    if len(data) > max_bytes:
        raise ImageTooLarge(_too_many_bytes(name, len(data), max_bytes), setting="max_bytes")
    if not data:
        raise NotAnImage(f"{name} is empty (0 bytes). Pass a JPEG, PNG, WebP or BMP image.")
    return data, name


def _named(path: str | os.PathLike[str]) -> str:
    """``path`` as an error names it: a name in bytes that are not UTF-8 as ``\\xNN``
    (:func:`~facetrust.text.readable_path`), and its control and invisible characters
    as ``⟨U+XXXX⟩`` (whoever put a photo in a shared folder chose its name: a newline
    would forge a line of the message, U+202E reverse it, an escape sequence drive
    the terminal that shows it)."""
    return shown(readable_path(path))


def read_image_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the image file at ``path``, never reading more than ``max_bytes``.

    Raises
    ------
    NotAnImage
        No file there, a folder, or a file that cannot be read (permissions, a
        path through a file, a symbolic link loop, an I/O error); each named.
    ImageTooLarge
        The file is over ``max_bytes`` (refused from its size, before reading).
    """
    path = os.fspath(path)
    named = _named(path)
    name = f"The file {named}"
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ImageTooLarge(_too_many_bytes(name, size, max_bytes), setting="max_bytes")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotAnImage(f"No file at {named}. Check the path.") from None
    except IsADirectoryError:
        raise NotAnImage(f"{named} is a folder, not an image file.") from None
    except PermissionError:
        raise NotAnImage(
            f"The file {named} cannot be read: permission denied. Give the user running "
            "facetrust read access to it, or copy it somewhere readable."
        ) from None
    except OSError as error:  # a path through a file, a symbolic link loop, an I/O error
        raise NotAnImage(
            f"The file {named} cannot be read ({error.strerror or error}). Check the path."
        ) from None
    if len(data) > max_bytes:  # grew since its size was read
        raise ImageTooLarge(_too_many_bytes(name, len(data), max_bytes), setting="max_bytes")
    return data


def _too_many_bytes(name: str, size: int, max_bytes: int) -> str:
    return (
        f"{name} is {size:,} bytes, over the {max_bytes:,}-byte cap. Send a smaller image."
    )


class _EndNotingReader(io.BytesIO):
    """Encoded image bytes that note a read at their end while ``ended`` is watched.

    Pillow decodes a truncated file without a word when its process-wide
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set (the real face_recognition sets it
    when imported; another thread or library may set it at any moment). A
    complete image is decoded without reading at its end, a truncated one only
    by reading there: that read is how a truncated file is told, whatever the
    flag says.
    """

    ended = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.ended = True
        return data


def _decode(data: bytes, name: str, max_pixels: int) -> RGBImage:
    with warnings.catch_warnings():
        # The pixel cap below replaces Pillow's global bomb check.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns of odd metadata it skips ("Corrupt EXIF data", "Skipping tag
        # 274") as Python warnings: a command's stderr would show its file and source
        # line beside facetrust's one-line error. What it skips is read as absent.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        stream = _EndNotingReader(data)
        if (declared := _webp_canvas_size(data)) is not None:
            # libwebp allocates the canvas as the file is opened: refused before that
            _check_dimensions(*declared, max_pixels, name)
        try:
            image = _open_header(stream, name)
        except Image.DecompressionBombError:  # Pillow's own limit, below a raised cap
            raise ImageTooLarge(_pillow_limit_message(name), setting="max_pixels") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise CorruptImage(f"{name} could not be read as an image: {error}.") from None
        if image is None:
            raise NotAnImage(_not_supported_message(name, data))
        _check_dimensions(image.width, image.height, max_pixels, name)
        # A phone's MPO is a still photo with extra views; an animation has no one
        # frame that is the photo, so none is picked silently.
        if getattr(image, "is_animated", False) and image.format != "MPO":
            raise NotAnImage(
                f"{name} is an animation ({getattr(image, 'n_frames', 2)} frames), not a still "
                "photo. Save the frame that shows the face as a JPEG or PNG and use that."
            )
        try:
            stream.ended = False  # what opening it read does not count
            image.load()
            if stream.ended:
                raise OSError("image file is truncated")
            upright: Image.Image = ImageOps.exif_transpose(image) or image
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise CorruptImage(
                f"{name} is truncated or damaged ({error}). Re-export or re-upload the photo."
            ) from None
    return _pil_to_rgb(upright, name)


def _open_header(stream: io.BytesIO, name: str) -> Image.Image | None:
    """``stream`` opened by the first plugin of :data:`SUPPORTED_FORMATS` that takes it
    (its header read, no pixel decoded), or None when none does. A file whose first
    bytes are a supported format's but whose header that format cannot read is
    refused as damaged (:class:`CorruptImage`), not as another format.

    What :func:`PIL.Image.open` does with ``formats=``, less its decompression-bomb
    check: that check reads Pillow's process-wide ``MAX_IMAGE_PIXELS``, which
    another library may change, and which would refuse, with no size to tell, a
    photo that a ``max_pixels`` raised above Pillow's default allows. The caller's
    own check of the declared size, before any pixel is decoded, takes its place.
    """
    Image.init()  # registers every plugin, so the allow-list can be looked up
    prefix = stream.getvalue()[:16]
    damaged: tuple[str, Exception] | None = None
    for fmt in SUPPORTED_FORMATS:
        if fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        taken = accept(prefix) if accept is not None else True
        if not taken or isinstance(taken, str):  # a str is Pillow's "not quite" warning
            continue
        stream.seek(0)
        try:
            image: Image.Image = factory(stream, "")
        except (SyntaxError, IndexError, TypeError, struct.error) as error:
            damaged = damaged or (fmt, error)
            continue  # another plugin may take it (MPO after JPEG), as Image.open does
        return image
    if damaged is not None:
        kind, why = damaged
        raise CorruptImage(
            f"{name} is a damaged {_FORMAT_NAMES.get(kind, kind)} file: its header cannot be "
            f"read ({why}). Re-export or re-upload the photo."
        )
    return None


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """The canvas (width, height) a WebP file declares in its first 30 bytes, or None
    for data that is not WebP (or too short to say).

    Read here because libwebp allocates the canvas when a file is opened, before
    Pillow gives its size; the pixel cap is checked against this first.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sides
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: sides - 1 in 14 bits each
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended (alpha, animation, metadata): sides - 1 in 24 bits
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


def _pillow_limit_message(name: str) -> str:
    return (
        f"{name} declares more pixels than Pillow, the image decoder, opens in this "
        "process (its MAX_IMAGE_PIXELS, below facetrust's pixel cap). It was refused "
        "before decoding: send a smaller image."
    )


def _not_supported_message(name: str, data: bytes) -> str:
    for offset, magic, kind in _OTHER_FORMATS:
        if data[offset:offset + len(magic)] == magic:
            return (
                f"{name} is in {kind} format; facetrust reads JPEG, PNG, WebP or BMP images "
                "only. Convert it to JPEG or PNG (from an animation or a multi-page file, "
                "the frame that shows the face) and send that."
            )
    return (
        f"{name} is not a JPEG, PNG, WebP or BMP image (its first bytes are "
        f"{data[:8].hex(' ')} in hex). Check the file, or convert it to one of those "
        "formats."
    )


def _check_dimensions(width: int, height: int, max_pixels: int, name: str = "The image") -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the "
            f"{max_pixels:,}-pixel cap. Downscale it and send it again.",
            setting="max_pixels",
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageTooSmall(
            f"{name} is {width}x{height} pixels; a face needs an image at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}. Use a larger photo."
        )


def _pil_to_rgb(image: Image.Image, name: str) -> RGBImage:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise UnsupportedImageMode(
        f"{name} has pixel mode {mode!r}, which facetrust cannot convert to RGB. "
        "Convert it to 8-bit RGB first."
    )


def _array_to_rgb(array: npt.NDArray[np.generic]) -> RGBImage:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UnsupportedImageMode(
            "Expected an array of shape (h, w), (h, w, 3) or (h, w, 4). "
            f"Got shape {array.shape} instead."
        )
    pixels: RGBImage
    if array.dtype == np.uint8:
        pixels = array.astype(np.uint8, copy=False)
    elif array.dtype in (np.uint16, np.int32, np.int64, np.float32) and array.ndim == 2:
        # 16-bit grayscale as Pillow decodes it (modes I;16 and I).
        scaled = np.clip(np.asarray(array, dtype=np.float64) / 257.0, 0, 255)
        pixels = np.rint(scaled).astype(np.uint8)
    elif array.dtype == np.uint16:
        pixels = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    else:
        raise UnsupportedImageMode(
            f"Expected a uint8 or uint16 array. Got dtype {array.dtype} instead; "
            "convert with (array * 255).astype('uint8') if it holds floats in [0, 1]."
        )
    if pixels.ndim == 2:
        return np.stack([pixels] * 3, axis=-1)
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
        blended = pixels[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        rgb: RGBImage = np.rint(blended).astype(np.uint8)
        return rgb
    return pixels
