from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.data.imagefiles import write_rgb
from transferlab.data import format_summary, load_source, prepare, summarize


def test_summary_of_a_folder_with_bad_files(zoo: tuple[Path, dict[str, Path], dict[Path, str]]) -> None:
    root, _, bad = zoo
    summary = summarize(prepare(load_source(root, val_fraction=0), 8), "zoo")
    assert json.loads(json.dumps(summary)) == summary  # plain data, ready for a JSON report
    assert summary["name"] == "zoo"
    assert summary["classes"] == ["cat", "dog"]
    assert summary["counts"] == {"train": {"cat": 12, "dog": 3}}
    assert {Path(s["path"]): s["reason"] for s in summary["skipped"]} == bad
    # Upright sizes: the EXIF-rotated 40×20 JPEG counts as 20×40; the dogs are 16×12, the rest 8×8 or 4×4.
    assert summary["image_sizes"] == {
        "min": [4, 4],
        "max": [20, 40],
        "most_common": [8, 8],
        "most_common_count": 7,
    }
    assert summary["notes"] == []

    text = format_summary(summary)
    lines = text.splitlines()
    assert lines[:4] == [
        "zoo: 2 classes, 15 images",
        "class  train",
        "cat       12",
        "dog        3",
    ]
    assert "image sizes: min 4×4, max 20×40, most common 8×8 (7 images)" in lines
    assert (
        "skipped 7 of 22 files: 3 not an image, 2 truncated image, 1 empty file, "
        "1 unreadable: No such file or directory"
    ) in lines
    assert f"  {root / 'dog' / 'empty.png'}: empty file" in lines


def test_summary_of_arrays_with_splits_and_a_leak_note(tmp_path: Path) -> None:
    images = np.arange(12, dtype=np.uint8)[:, None, None].repeat(6, axis=1).repeat(6, axis=2)
    images[6:] = images[:6]  # image i+6 repeats image i, label too: each val image has its twin in train
    labels = np.array([0, 1, 2] * 4)
    dataset = load_source((images, labels, ["ant", "bee", "cow"]), val_fraction=0.25, seed=0)
    summary = summarize(prepare(dataset, 6), "bugs")
    assert summary["counts"] == {
        "train": dict.fromkeys(["ant", "bee", "cow"], 3),
        "val": dict.fromkeys(["ant", "bee", "cow"], 1),
    }
    assert summary["image_sizes"] == {
        "min": [6, 6],
        "max": [6, 6],
        "most_common": [6, 6],
        "most_common_count": 12,
    }
    assert summary["skipped"] == []
    text = format_summary(summary)
    assert "class  train  val" in text
    assert "total      9    3" in text
    assert "image sizes: 6×6 (all)" in text
    (note,) = summary["notes"]
    assert note.startswith("3 val images are identical to train images (val[0] = train[")
    assert text.endswith(f"notes:\n  - {note}")


def test_many_images_align_in_columns(tmp_path: Path) -> None:
    for i in range(12):
        write_rgb(tmp_path / "d" / ("long class name" if i % 2 else "b") / f"{i}.png", (i, 0, 0))
    text = format_summary(summarize(prepare(load_source(tmp_path / "d"), 4), "d"))
    header, *rows = text.splitlines()[1:5]
    assert header == "class            train  val"
    assert rows == [
        "b                    5    1",
        "long class name      5    1",
        "total               10    2",
    ]
