"""Image folders: one subfolder per class, or train/ val/ test/ folders that each hold class subfolders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from transferlab.data.decode import IMAGE_EXTENSIONS, is_image_file
from transferlab.data.types import SPLIT_ALIASES, LabelledFiles
from transferlab.errors import DataError


def read_folder(root: Path) -> dict[str, LabelledFiles]:
    """The image files below `root` by split, labelled by their class folder's name.

    Hidden files and folders (a name starting with '.') and files without an image extension are ignored.
    Images in folders nested below a class folder belong to that class.
    """
    subfolders = _visible_folders(root)
    split_folders = [folder for folder in subfolders if folder.name.lower() in SPLIT_ALIASES]
    found = _split_files(root, split_folders) if split_folders else {"train": _class_files(root)}
    if not any(files.paths for files in found.values()):
        raise DataError(
            f"no images found in {root}: expected one subfolder per class (or train/, val/, test/ folders of "
            f"class subfolders) holding {', '.join(sorted(IMAGE_EXTENSIONS))} files"
        )
    return found


def _split_files(root: Path, split_folders: list[Path]) -> dict[str, LabelledFiles]:
    found: dict[str, LabelledFiles] = {}
    for folder in split_folders:
        split = SPLIT_ALIASES[folder.name.lower()]
        if split in found:
            raise DataError(f"{root} has two folders for the {split} split: keep one of them")
        found[split] = _class_files(folder)
    if "train" not in found:
        raise DataError(f"{root} has {', '.join(f.name for f in split_folders)} folders but no train folder")
    return found


def _class_files(folder: Path) -> LabelledFiles:
    found = LabelledFiles()
    for class_folder in _visible_folders(folder):
        images = _images_below(class_folder)
        found.paths += images
        found.labels += [class_folder.name] * len(images)
    return found


def _visible_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _images_below(folder: Path) -> list[Path]:
    images: list[Path] = []
    # Symbolic links to folders below a class folder are not followed, so a link loop cannot trap the walk.
    for here, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        images += [Path(here, name) for name in sorted(names) if not name.startswith(".") and is_image_file(Path(name))]
    return images


def read_unlabelled(root: Path) -> list[Path]:
    """Every image file below `root`, whatever folders hold it: a domain-adaptation target needs no labels."""
    return _images_below(root)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files of `paths`, each folder searched as `read_unlabelled` does; paths that do not exist are left out
    (the caller reports them)."""
    return [
        file
        for path in map(Path, paths)
        for file in (read_unlabelled(path) if path.is_dir() else [path] * path.exists())
    ]
