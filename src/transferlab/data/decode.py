"""The one place that opens images: any file or array becomes 8-bit RGB, or a BadImage with a short reason."""

from __future__ import annotations

import math
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.data.types import Split

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Pillow's own default cap: about a quarter of a gigapixel, 256 MiB as 24-bit RGB.
DEFAULT_MAX_PIXELS = 89_478_485

EMPTY = "empty file"
TRUNCATED = "truncated image"
NOT_AN_IMAGE = "not an image"
NOT_A_FILE = "unreadable: not a regular file"

_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE = (255, 255, 255, 255)
_EXIF_ORIENTATION = 0x0112

# How each backbone's `interpolation` resamples with Pillow.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

# What Pillow's decoders and the OS raise on broken input. Anything else is transferlab's own bug, and must
# surface as one, not as "corrupt image" on every file.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


class BadImage(Exception):
    """A file that cannot be used as an image; `reason` is short and stable (one of the constants above)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unreadable(err: OSError) -> str:
    """The reason for a file the operating system would not let us read."""
    return f"unreadable: {err.strerror or err}"


def too_large(pixels: int, cap: int) -> str:
    """The reason for an image above the pixel cap (a decompression bomb, or simply too big to hold)."""
    return f"too large: {pixels} pixels (cap {cap})"


def is_image_file(path: Path) -> bool:
    """Whether the name carries an image extension (any case); the content is checked only when opened."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


@contextmanager
def quiet_size_warnings() -> Iterator[None]:
    """Silence Pillow's warning for big-but-allowed images while decoding: we enforce our own cap with a clearer
    message. Enter it once around a whole decoding pass, never per file from several threads: `catch_warnings`
    swaps the process's filters, and interleaved threads would leave them changed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def open_scaled(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode `path` into an upright RGB image, with the file's full upright (width, height); or raise BadImage
    saying why it cannot be used.

    With `min_side`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's draft mode: several times
    faster on photos) as long as its shorter side stays at least `min_side`. Other formats decode in full.
    """
    try:
        _check_file(path)
        with Image.open(path) as img:
            width, height = img.size
            # Checked before load(), so a bomb never gets to allocate its pixels.
            if width * height > max_pixels:
                raise BadImage(too_large(width * height, max_pixels))
            if min_side is not None and min_side < min(width, height):
                scale = min_side / min(width, height)
                img.draft(img.mode, (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            # EXIF orientations 5 to 8 turn the picture a quarter, so its upright size is the other way round.
            full = (height, width) if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8) else (width, height)
            # Not in place: the upright copy outlives the `with`, which closes `img` and its file.
            return to_rgb(ImageOps.exif_transpose(img)), full
    except DECODE_ERRORS as err:  # decoders meet every kind of broken input: each must become a reason
        raise BadImage(_reason(err)) from err


def _check_file(path: Path) -> None:
    info = path.stat()  # follows links: a broken one fails here with "No such file or directory"
    if not stat.S_ISREG(info.st_mode):
        raise BadImage(NOT_A_FILE)  # a folder, a FIFO (opening one would block) or a device
    if info.st_size == 0:
        raise BadImage(EMPTY)


def _reason(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError):
        # Pillow refuses on its own, before we see the size, above twice its global Image.MAX_IMAGE_PIXELS
        # (never None here: None turns this error off).
        return f"too large: over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (Pillow's cap)"
    if isinstance(err, UnidentifiedImageError):
        return NOT_AN_IMAGE
    if isinstance(err, OSError) and err.errno is not None:
        return unreadable(err)
    message = " ".join(str(err).split())  # one line, whatever the decoder wrote
    # Pillow words short reads with "truncated" (in OSError or SyntaxError); some plugins hit end of file.
    if isinstance(err, EOFError) or "truncated" in message.lower():
        return TRUNCATED
    return f"corrupt image: {message}"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB: transparency goes onto white, wide and float greys are scaled down to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        return Image.fromarray(channels_to_rgb(to_uint8(np.asarray(img))[..., None]))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        return Image.alpha_composite(Image.new("RGBA", img.size, _WHITE), img.convert("RGBA")).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:  # e.g. LAB, which Pillow cannot convert
        raise BadImage(f"unsupported colour mode {img.mode}") from err


def channels_to_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8 [..., C] with C in (1, 3, 4) → [..., 3]; works on one image or a whole batch."""
    channels = arr.shape[-1]
    if channels == 1:
        return np.repeat(arr, 3, axis=-1)
    if channels == 4:
        alpha = arr[..., 3:].astype(np.uint16)
        # Composite onto white: rgb * a + 255 * (1 - a), in integers with rounding.
        return ((arr[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return arr


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any numeric dtype → uint8.

    A known range keeps its meaning: 16-bit integers and values within 0..65535 scale by 255/65535, floats
    within 0..1 by 255, values within 0..255 stay. Any other range (negative, or wider) is stretched min..max.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # either byte order: I;16 and I;16B
        return _from_16_bit(arr)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        return np.rint(arr * 255).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.rint(arr).astype(np.uint8)
    if lo >= 0 and hi <= 65535 and np.issubdtype(arr.dtype, np.integer):
        return _from_16_bit(arr)
    return np.rint((arr - lo) * (255 / (hi - lo))).astype(np.uint8)


def _from_16_bit(arr: np.ndarray) -> np.ndarray:
    # Round to nearest: 65535 → 255 and 32768 → 128, where a plain shift would darken every value a little.
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def native_size(split: Split, sample: int = 64) -> int:
    """The median shorter side of a split's images, read from file headers only (no pixels decoded).

    Unreadable files are left out here; decoding reports them later. Returns 0 when none could be read.
    """
    if split.arrays is not None:
        return int(min(split.arrays.shape[1:3]))
    sides = []
    for path in (split.paths or [])[:: max(1, len(split.paths or []) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else 0


def square_crop(image: Image.Image, size: int, resample: Image.Resampling) -> np.ndarray:
    """The centred square of `image`, resized to size×size in one step: [3, size, size] uint8."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    square = image.resize((size, size), resample, box=(left, top, left + side, top + side))
    return np.asarray(square).transpose(2, 0, 1)
