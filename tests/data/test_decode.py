from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.imagefiles import write_bad_files, write_good_images
from transferlab.data import decode
from transferlab.data.decode import BadImage, open_scaled

WHITE = (255, 255, 255)


def pixels(path: Path) -> np.ndarray:
    image = open_scaled(path)[0]
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Path]:
    return write_good_images(tmp_path)


def test_grey_and_bilevel_become_grey_rgb(good: dict[str, Path]) -> None:
    assert (pixels(good["L"]) == 100).all()
    assert (pixels(good["1"]) == 255).all()


@pytest.mark.parametrize(("mode", "opaque"), [("LA", (50, 50, 50)), ("RGBA", (10, 20, 30)), ("P", (0, 0, 255))])
def test_transparency_is_composited_onto_white(good: dict[str, Path], mode: str, opaque: tuple[int, ...]) -> None:
    rgb = pixels(good[mode])
    assert (rgb[:, :4] == WHITE).all()
    assert (rgb[:, 4:] == opaque).all()


def test_cmyk_jpeg_becomes_rgb(good: dict[str, Path]) -> None:
    assert Image.open(good["CMYK"]).mode == "CMYK"
    assert np.abs(pixels(good["CMYK"]) - (255, 0, 255)).max() <= 3  # full magenta ink, up to JPEG's rounding


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_wide_integers_scale_to_8_bits_instead_of_clipping(good: dict[str, Path], mode: str) -> None:
    assert Image.open(good[mode]).mode == mode
    row = pixels(good[mode])[0, :, 0]
    assert {"I;16": [0, 1, 128, 255], "I;16B": [0, 1, 128, 255], "I": [0, 4, 156, 255]}[mode] == row.tolist()


def test_float_in_unit_range_scales_to_8_bits(good: dict[str, Path]) -> None:
    assert (pixels(good["F"]) == 128).all()


def test_exif_orientation_is_applied(good: dict[str, Path]) -> None:
    assert Image.open(good["EXIF"]).size == (40, 20)
    rgb = pixels(good["EXIF"])
    assert rgb.shape == (
        40,
        20,
        3,
    )  # orientation 6: turned a quarter clockwise, so the left half is now on top
    assert np.abs(rgb[5, 10] - (255, 0, 0)).max() < 10
    assert np.abs(rgb[35, 10] - (0, 0, 255)).max() < 10


def test_bad_files_give_their_exact_reason(tmp_path: Path) -> None:
    for path, reason in write_bad_files(tmp_path).items():
        with pytest.raises(BadImage) as caught:
            open_scaled(path)[0]
        assert caught.value.reason == reason, path.name


def test_a_folder_with_an_image_name_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(BadImage, match=decode.NOT_A_FILE):
        open_scaled(tmp_path / "x.jpg")[0]


def test_pixel_cap_refuses_before_decoding(good: dict[str, Path]) -> None:
    with pytest.raises(BadImage) as caught:
        open_scaled(good["RGB"], max_pixels=100)
    assert caught.value.reason == decode.too_large(120, 100) == "too large: 120 pixels (cap 100)"


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    # A real 1×1 PNG whose header then claims 20000×20000 pixels: Pillow itself refuses it when opening.
    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", 20000, 20000) + bytes(data[24:29])
    data[12:33] = header + struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))
    with pytest.raises(BadImage) as caught:
        open_scaled(path)[0]
    assert caught.value.reason.startswith("too large: over ")


def test_image_extensions_match_in_any_case() -> None:
    assert decode.is_image_file(Path("a/B.JPEG"))
    assert decode.is_image_file(Path("scan.Tiff"))
    assert not decode.is_image_file(Path("notes.txt"))
    assert {".jpg", ".png", ".webp", ".pgm"} <= decode.IMAGE_EXTENSIONS


def test_jpeg_decodes_reduced_but_reports_its_full_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(path)
    image, full = open_scaled(path, min_side=100)
    assert full == (800, 600)
    assert image.size == (200, 150)  # libjpeg's 1/4 scale: the smallest that keeps the short side >= 100
    assert open_scaled(path)[0].size == (800, 600)


def test_reduced_exif_rotated_jpeg_reports_its_upright_full_size(good: dict[str, Path]) -> None:
    image, full = open_scaled(good["EXIF"], min_side=5)
    assert full == (20, 40)
    assert image.size == (5, 10)
    assert image.mode == "RGB"


def test_decoding_silences_pillow_s_size_warning_without_changing_the_process_filters(tmp_path, monkeypatch) -> None:
    import warnings

    from transferlab.data import decode_split
    from transferlab.data.types import Split

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 40x40 image now draws Pillow's warning, not its error
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40), (9, 9, 9)).save(path)
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_split(Split(paths=[path], labels=np.zeros(1, dtype=np.int64)), 8)
        assert len(decoded.labels) == 1 and not decoded.skipped
        Image.open(path).load()  # outside transferlab's decoding, Pillow's warning is the user's again
    assert [w.category for w in caught] == [Image.DecompressionBombWarning]
    assert warnings.filters == before


def test_a_bug_in_transferlab_surfaces_as_itself_not_as_a_corrupt_image(good, monkeypatch) -> None:
    def broken(image):
        raise RuntimeError("a bug, not a bad file")

    monkeypatch.setattr(decode, "to_rgb", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        open_scaled(good["RGB"])[0]
