"""Any data source → a Dataset: an image folder, a CSV manifest, a built-in name, or in-memory arrays."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.builtins import BUILTINS, load_builtin
from transferlab.data.decode import channels_to_rgb, to_uint8
from transferlab.data.folder import read_folder
from transferlab.data.leakage import duplicate_notes
from transferlab.data.listing import name_some
from transferlab.data.manifest import read_manifest
from transferlab.data.splitting import carve, per_class_subset
from transferlab.data.types import DEFAULT_TASK, SPLITS, Dataset, LabelledFiles, Split, label_matrix
from transferlab.errors import ConfigError, DataError

# A folder or CSV path, a built-in name, or in memory: (images, labels) or (images, labels, class_names), where
# `images` is an array or a list of image file paths.
Source = str | Path | tuple[Any, ...]


def load_source(
    source: Source,
    *,
    tasks: list[str] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    sample_seed: int | None = None,
) -> Dataset:
    """Read `source` into a Dataset with train, val (given, or carved from train) and, when known, test.

    `tasks` names a CSV manifest's label columns, for a multi-task data set (`None` or `["label"]`: the one
    `label` column). Missing labels are -1; carving val stratifies by the task with the fewest labels.

    A `str` that names a built-in (see BUILTINS) loads it, even where a folder of that name exists: write
    './digits' for the folder. `per_class` keeps that many images of each class from train and val together,
    chosen by `sample_seed` (unset: `seed`), before val is carved, so train+val hold `per_class` images per
    class (of several tasks, at least that many labels per class of every task); test stays whole.
    `val_fraction` of each class becomes val when the source has no val split (0 carves none; None: a tenth,
    at least 10 images and at most a fifth of it, see data/splitting.py), chosen by `seed`: one `sample_seed`
    and several seeds are several splits of the same labelled images.
    """
    if per_class is not None and per_class < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    several = tasks is not None and list(tasks) != [DEFAULT_TASK]
    dataset = _read_tasks(source, list(tasks or [])) if several else _read(source)
    _check_classes(dataset)
    splits = dict(dataset.splits)
    if per_class is not None:
        splits.update(per_class_subset(splits, per_class, seed if sample_seed is None else sample_seed))
    if "val" not in splits and val_fraction != 0:
        splits["train"], splits["val"] = carve(splits["train"], val_fraction, seed)
    dataset.splits = {name: splits[name] for name in SPLITS if name in splits}
    dataset.notes.extend(duplicate_notes(dataset))
    return dataset


def _read(source: Source) -> Dataset:
    if isinstance(source, tuple):
        return from_files(*source) if isinstance(source[0], list) else from_arrays(*source)
    if isinstance(source, str) and source in BUILTINS:
        return load_builtin(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return _index(path.name, read_folder(path))
    if path.is_file() and path.suffix.lower() == ".csv":
        return _index(path.stem, read_manifest(path))
    if path.exists():
        raise DataError(f"{path} is neither a folder of images nor a .csv manifest")
    raise DataError(f"no such file or folder: {path} (built-in data sets: {', '.join(BUILTINS)})")


def _read_tasks(source: Source, tasks: list[str]) -> Dataset:
    """A multi-task data set from a CSV manifest with one label column per task."""
    path = Path(source).expanduser() if isinstance(source, str | Path) else None
    if path is None or path.suffix.lower() != ".csv" or not path.is_file():
        raise DataError(f"several tasks ({', '.join(tasks)}) need a CSV manifest with one label column each")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks named twice: {', '.join(tasks)}")
    found = {split: files for split, files in read_manifest(path, tasks).items() if files.paths}
    classes = {task: sorted({v for files in found.values() for v in files.tasks[task] if v}) for task in tasks}
    splits = {}
    for split, files in found.items():
        columns = [[classes[task].index(v) if v else -1 for v in files.tasks[task]] for task in tasks]
        splits[split] = Split(labels=np.array(columns, dtype=np.int64).T, paths=files.paths, extra=files.extra)
    for task, names in classes.items():
        if len(names) < 2:
            only = f"only one class ('{names[0]}')" if names else "no labels at all"
            raise DataError(f"task '{task}' of {path} has {only}: a task needs at least 2 classes")
    if len(tasks) == 1:  # one task: an image without its label has nothing to teach, so it is left out
        splits = {name: split.subset(np.flatnonzero(split.labels[:, 0] >= 0)) for name, split in splits.items()}
        splits = {name: replace(split, labels=split.labels[:, 0]) for name, split in splits.items() if len(split)}
    return Dataset(path.stem, classes[tasks[0]], splits, tasks=classes)


def _index(name: str, found: dict[str, LabelledFiles]) -> Dataset:
    """Give the class names sorted indices; splits that hold no images are left out."""
    classes = sorted({label for files in found.values() for label in files.labels})
    index = {label: i for i, label in enumerate(classes)}
    splits = {
        split: Split(
            labels=np.array([index[label] for label in files.labels], dtype=np.int64),
            paths=files.paths,
            extra=files.extra,
        )
        for split, files in found.items()
        if files.paths
    }
    return Dataset(name, classes, splits)


def _check_classes(dataset: Dataset) -> None:
    if "train" not in dataset.splits or len(dataset.splits["train"]) == 0:
        raise DataError(f"{dataset.name} has no training images")
    train = label_matrix(dataset.splits["train"].labels)
    for column, task in enumerate(dataset.tasks or []):
        if not (train[:, column] >= 0).any():
            raise DataError(f"task '{task}' has no label at all in the training split of {dataset.name}")
    if len(dataset.classes) < 2:
        raise DataError(f"{dataset.name} has only one class ('{dataset.classes[0]}'): a classifier needs at least 2")


def from_arrays(images: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None) -> Dataset:
    """A Dataset (train only) from in-memory images and labels.

    `images`: [N, H, W] or [N, H, W, C] (or channels first, [N, C, H, W]) with C in (1, 3, 4), of any numeric
    dtype (see decode.to_uint8). `labels`: ints or strings; with `class_names`, ints index them and strings
    must be among them; without, the sorted distinct labels become the classes.
    """
    batch = _image_batch(np.asarray(images))
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(batch):
        raise DataError(f"got {len(batch)} images but labels of shape {labels.shape}: need one label per image")
    classes, index = _label_index(labels, class_names)
    return Dataset("arrays", classes, {"train": Split(labels=index.astype(np.int64), arrays=batch)})


def from_files(paths: list[str | Path], labels: np.ndarray, class_names: list[str] | None = None) -> Dataset:
    """A Dataset (train only) from image file paths and their labels (as for `from_arrays`); the files are
    decoded, and bad ones skipped, as a folder's are."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(paths):
        raise DataError(f"got {len(paths)} image paths but labels of shape {labels.shape}: need one label per image")
    classes, index = _label_index(labels, class_names)
    return Dataset("files", classes, {"train": Split(labels=index.astype(np.int64), paths=[Path(p) for p in paths])})


def _image_batch(images: np.ndarray) -> np.ndarray:
    """[N, H, W] grey or [N, H, W, 3] RGB uint8, the two shapes a Split holds."""
    images = to_uint8(images)  # one range for the whole batch, so images keep their relative brightness
    channels_first = images.ndim == 4 and images.shape[1] in (1, 3, 4) and images.shape[-1] not in (1, 3, 4)
    if channels_first:  # as torch keeps them
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] in (1, 4):
        images = channels_to_rgb(images) if images.shape[-1] == 4 else images[..., 0]
    if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3):
        return np.ascontiguousarray(images)
    raise DataError(f"in-memory images must be [N, H, W] or [N, H, W, 1/3/4] arrays, got shape {images.shape}")


def _label_index(labels: np.ndarray, class_names: list[str] | None) -> tuple[list[str], np.ndarray]:
    if class_names is None:
        values, index = np.unique(labels, return_inverse=True)
        return [str(v) for v in values], index
    classes = [str(name) for name in class_names]
    if labels.dtype.kind in "iu":
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"labels run {labels.min()}..{labels.max()} but there are {len(classes)} class names")
        return classes, labels
    lookup = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(label) for label in labels} - lookup.keys())
    if unknown:
        raise DataError(f"labels not among the class names: {name_some(unknown)}")
    return classes, np.array([lookup[str(label)] for label in labels])
