"""Real image files written at test time: one per colour mode, and bad files of all kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data import decode

EXIF_ORIENTATION = 0x0112


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)  # index 0 red (made transparent), 1 blue
    image.paste(1, (4, 0, 8, 8))
    return image


def _half_transparent(mode: str, colour: tuple[int, ...]) -> Image.Image:
    """Left half fully transparent, right half `colour` fully opaque."""
    image = Image.new(mode, (8, 8), (*colour[:-1], 0))
    image.paste(colour, (4, 0, 8, 8))
    return image


def _rotated_jpeg(path: Path) -> Path:
    """40×20 stored (left half red, right half blue), with EXIF orientation 6: shown turned 90° clockwise."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return _save(image, path, exif=exif, quality=95)


def write_good_images(folder: Path) -> dict[str, Path]:
    """One real file per mode that decode must turn into RGB, keyed by a short name."""
    sixteen = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    wide = np.array([[0, 1000, 40000, 65535]], dtype=np.int32).repeat(4, axis=0)
    return {
        "L": _save(Image.new("L", (8, 8), 100), folder / "grey.png"),
        "LA": _save(_half_transparent("LA", (50, 255)), folder / "grey_alpha.png"),
        "P": _save(_palette_with_transparency(), folder / "palette.png", transparency=0),
        "RGBA": _save(_half_transparent("RGBA", (10, 20, 30, 255)), folder / "rgba.png"),
        "CMYK": _save(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), folder / "cmyk.jpg", quality=95),
        "I;16": _save(Image.fromarray(sixteen), folder / "sixteen.png"),
        "I;16B": _save(Image.frombytes("I;16B", (4, 4), sixteen.astype(">u2").tobytes()), folder / "big_endian.tif"),
        "I": _save(Image.fromarray(wide), folder / "wide.tif"),
        "F": _save(Image.new("F", (8, 8), 0.5), folder / "float.tif"),
        "1": _save(Image.new("1", (8, 8), 1), folder / "bilevel.png"),
        "EXIF": _rotated_jpeg(folder / "rotated.jpg"),
        "RGB": _save(Image.new("RGB", (12, 10), (0, 200, 0)), folder / "UPPER.JPG", quality=95),
    }


def write_bad_files(folder: Path) -> dict[Path, str]:
    """Bad files, each with the exact reason decode must give."""
    folder.mkdir(parents=True, exist_ok=True)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    jpeg, png = folder / "truncated.jpg", folder / "truncated.png"
    noise.save(jpeg, quality=95)
    noise.save(png)
    for path in (jpeg, png):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("these are not the pixels you are looking for\n")
    (folder / "document.jpg").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>Access denied</body></html>\n")
    # Tests run as root, which reads through chmod 000: a link to nothing is unreadable for everyone.
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    return {
        jpeg: decode.TRUNCATED,
        png: decode.TRUNCATED,
        folder / "empty.png": decode.EMPTY,
        folder / "text.png": decode.NOT_AN_IMAGE,
        folder / "document.jpg": decode.NOT_AN_IMAGE,
        folder / "page.jpg": decode.NOT_AN_IMAGE,
        folder / "dangling.jpg": "unreadable: No such file or directory",
    }


def write_rgb(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> Path:
    """A plain RGB PNG of one colour."""
    return _save(Image.new("RGB", size, colour), path)
