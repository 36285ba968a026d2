"""Fixtures of real image folders, built from the writers in imagefiles.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.imagefiles import write_bad_files, write_good_images, write_rgb


@pytest.fixture
def zoo(tmp_path: Path) -> tuple[Path, dict[str, Path], dict[Path, str]]:
    """Class folders: 'cat' holds every good mode, 'dog' three good images and every bad file; plus files that
    must be ignored (hidden, or without an image extension)."""
    root = tmp_path / "zoo"
    good = write_good_images(root / "cat")
    for k in range(3):
        good[f"dog{k}"] = write_rgb(root / "dog" / f"dog{k}.png", (40 * k, 0, 0))
    bad = write_bad_files(root / "dog")
    (root / "dog" / "notes.txt").write_text("not listed")
    write_rgb(root / "cat" / ".hidden.png", (1, 2, 3))
    write_rgb(root / "cat" / ".thumbnails" / "thumb.png", (1, 2, 3))
    return root, good, bad
