from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.imagefiles import write_rgb
from transferlab.data import Skipped, Split, decode_split, load_source, prepare
from transferlab.data.cache import allocate
from transferlab.data.decode import NOT_A_FILE
from transferlab.errors import ConfigError, DataError


def thirds(width: int = 90, height: int = 30) -> np.ndarray:
    """Red | green | blue thirds across the width: a centre square crop keeps only green."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 3, 0] = image[:, width // 3 : 2 * width // 3, 1] = image[:, 2 * width // 3 :, 2] = 255
    return image


def test_files_are_decoded_skipped_and_logged(
    zoo: tuple[Path, dict[str, Path], dict[Path, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, good, bad = zoo
    split = load_source(root, val_fraction=0).splits["train"]
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        decoded = decode_split(split, 16, workers=2)
    assert set(decoded.paths or []) == set(good.values())
    assert decoded.images.shape == (len(good), 3, 16, 16)
    assert decoded.images.dtype == torch.uint8
    assert decoded.labels.tolist() == [int(split.labels[split.paths.index(p)]) for p in decoded.paths or []]
    assert {Path(s.path): s.reason for s in decoded.skipped} == bad
    assert sorted(caplog.messages) == sorted(f"skipped {path}: {reason}" for path, reason in bad.items())
    sizes = dict(zip(decoded.paths or [], decoded.sizes, strict=True))
    assert sizes[good["EXIF"]] == (20, 40)  # upright, as the camera meant it
    assert sizes[good["RGB"]] == (12, 10)


def test_files_are_resized_then_centre_cropped(tmp_path: Path) -> None:
    Image.fromarray(thirds()).save(tmp_path / "thirds.png")
    split = Split(labels=np.array([0]), paths=[tmp_path / "thirds.png"])
    image = decode_split(split, 10).images[0].int()
    assert image.shape == (3, 10, 10)
    # Pure green inside; at the edges the antialiasing filter reaches past the crop, into red and blue.
    assert image[:, :, 1:-1].tolist() == [[[0] * 8] * 10, [[255] * 8] * 10, [[0] * 8] * 10]
    assert (image[1] > 200).all()
    assert (image[0] + image[2] < 64).all()


def test_arrays_are_resized_vectorised_to_the_same_geometry() -> None:
    images = np.stack([thirds()] * 5)
    decoded = decode_split(Split(labels=np.arange(5), arrays=images), 10, interpolation="bicubic")
    assert decoded.images.shape == (5, 3, 10, 10)
    assert decoded.images.dtype == torch.uint8
    assert decoded.images[:, 1].min() == 255
    assert decoded.images[:, 0].max() == decoded.images[:, 2].max() == 0
    assert decoded.sizes == [(90, 30)] * 5
    assert decoded.labels.dtype == torch.int64
    assert decoded.paths is None


def test_grey_arrays_fill_three_channels_and_upsample() -> None:
    grey = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 200
    decoded = decode_split(Split(labels=np.array([0, 1]), arrays=grey), 64)
    assert decoded.images.shape == (2, 3, 64, 64)
    assert torch.equal(decoded.images[:, 0], decoded.images[:, 2])
    same_size = decode_split(Split(labels=np.array([0, 1]), arrays=grey), 28)
    assert torch.equal(same_size.images[:, 1], torch.from_numpy(grey))  # no resize: the pixels themselves


def test_large_results_spill_to_a_memory_mapped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []
    real = tempfile.TemporaryFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        opened.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    grey = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    split = Split(labels=np.arange(7) % 2, arrays=grey)
    in_ram = decode_split(split, 32)
    assert opened == []
    spilled = decode_split(split, 32, memmap_bytes=1000, spill_dir=tmp_path)
    assert opened == [tmp_path]
    assert torch.equal(spilled.images, in_ram.images)
    assert isinstance(allocate((2, 3, 4, 4), memmap_bytes=10, spill_dir=tmp_path), np.memmap)
    assert not isinstance(allocate((2, 3, 4, 4)), np.memmap)


def test_unknown_interpolation_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown interpolation 'cubic'"):
        decode_split(Split(labels=np.array([0]), arrays=np.zeros((1, 4, 4), np.uint8)), 4, interpolation="cubic")


def test_prepare_decodes_every_split_and_summarises_skips(
    zoo: tuple[Path, dict[str, Path], dict[Path, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, good, bad = zoo
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        prepared = prepare(load_source(root, val_fraction=0.25), 8)
    assert list(prepared.splits) == ["train", "val"]
    assert prepared.classes == ["cat", "dog"]
    assert sum(len(d.labels) for d in prepared.splits.values()) == len(good)
    assert len(prepared.skipped) == len(bad)
    assert caplog.messages[-1] == (
        f"skipped 7 of {len(good) + len(bad)} files: 3 not an image, 2 truncated image, 1 empty file, "
        "1 unreadable: No such file or directory"
    )


def test_class_left_empty_after_skipping_is_refused(tmp_path: Path) -> None:
    for i in range(2):
        write_rgb(tmp_path / "d" / "cat" / f"{i}.png", (i, 0, 0))
    (tmp_path / "d" / "dog").mkdir()
    for i in range(3):
        (tmp_path / "d" / "dog" / f"{i}.jpg").write_text("not a jpeg")
    with pytest.raises(DataError, match=r"^class 'dog' has no usable images left after skipping 3 bad files$"):
        prepare(load_source(tmp_path / "d", val_fraction=0), 8)


def test_manifest_rows_naming_folders_are_skipped(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", (1, 0, 0))
    write_rgb(tmp_path / "b.png", (2, 0, 0))
    (tmp_path / "c.jpg").mkdir()  # exists, so the manifest accepts it; decoding then finds no file to read
    (tmp_path / "m.csv").write_text("path,label\na.png,cat\nb.png,dog\nc.jpg,dog\n")
    decoded = decode_split(load_source(tmp_path / "m.csv", val_fraction=0).splits["train"], 4)
    assert decoded.skipped == [Skipped(str(tmp_path / "c.jpg"), NOT_A_FILE)]
    assert decoded.paths == [tmp_path / "a.png", tmp_path / "b.png"]
