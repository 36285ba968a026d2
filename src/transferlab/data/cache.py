"""Decodes and resizes every image once, into uint8 tensors, so that training epochs never decode again."""

from __future__ import annotations

import logging
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from transferlab.data.decode import (
    DEFAULT_MAX_PIXELS,
    INTERPOLATIONS,
    BadImage,
    open_scaled,
    quiet_size_warnings,
    square_crop,
)
from transferlab.data.types import DEFAULT_TASK, Dataset, Skipped, Split, label_matrix
from transferlab.errors import ConfigError, DataError

logger = logging.getLogger("transferlab")

# Above this many bytes the decoded images live in a memory-mapped temporary file instead of RAM.
DEFAULT_MEMMAP_BYTES = 2 * 1024**3
_TORCH_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}  # as Pillow samples
_CHUNK_BYTES = 64 * 1024**2  # float32 working memory per chunk of in-memory images


@dataclass
class DecodedSplit:
    """One split's usable images, decoded and resized: what training and evaluation read."""

    images: torch.Tensor  # uint8 [N, 3, size, size]; N counts the good images only
    labels: torch.Tensor  # int64 [N], or [N, T] for several tasks (-1: missing), as in Split
    sizes: list[tuple[int, int]]  # each kept image's original (width, height), upright
    skipped: list[Skipped]
    paths: list[Path] | None = None  # the kept files, aligned with `images`; None for in-memory sources


@dataclass
class PreparedData:
    """Every split of a Dataset, decoded: the input of training. `classes` and `tasks` as in Dataset."""

    classes: list[str]
    splits: dict[str, DecodedSplit]
    skipped: list[Skipped]
    notes: list[str]
    tasks: dict[str, list[str]] | None = None

    @property
    def heads(self) -> dict[str, list[str]]:
        return self.tasks or {DEFAULT_TASK: self.classes}

    def task_view(self, task: str) -> PreparedData:
        """One task of a multi-task set as a single-task set: its labels [N], images that lack one left out."""
        if self.tasks is None or len(self.tasks) == 1:  # one task: its labels are [N] already
            return self
        column = list(self.tasks).index(task)
        splits = {}
        for name, split in self.splits.items():
            keep = torch.nonzero(split.labels[:, column] >= 0).flatten()
            paths = [split.paths[i] for i in keep] if split.paths is not None else None
            sizes = [split.sizes[i] for i in keep]
            splits[name] = DecodedSplit(split.images[keep], split.labels[keep, column], sizes, split.skipped, paths)
        return PreparedData(self.tasks[task], splits, self.skipped, self.notes)


def decode_split(
    split: Split,
    size: int,
    *,
    interpolation: str = "bilinear",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    memmap_bytes: int = DEFAULT_MEMMAP_BYTES,
    spill_dir: Path | None = None,
) -> DecodedSplit:
    """Decode `split` to size×size: the shorter side is resized to `size` (antialiased), then centre-cropped.

    Bad files are skipped, each logged as one warning. `workers` threads decode files (Pillow releases the
    GIL); None lets the pool pick. Results above `memmap_bytes` are backed by a file in `spill_dir` (default:
    the system's temporary folder, see TMPDIR), which the system deletes once the tensor is gone.
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{interpolation}': use one of {', '.join(INTERPOLATIONS)}")
    if size < 1:
        raise ConfigError(f"image size must be at least 1, got {size}")
    out = allocate((len(split), 3, size, size), memmap_bytes, spill_dir)
    if split.arrays is not None:
        _resize_arrays(split.arrays, out, _TORCH_MODES[interpolation])
        height, width = split.arrays.shape[1:3]
        return DecodedSplit(
            images=torch.from_numpy(out),
            labels=torch.from_numpy(split.labels.astype(np.int64)),
            sizes=[(width, height)] * len(split),
            skipped=[],
        )
    return _decode_files(split.paths or [], split.labels, out, INTERPOLATIONS[interpolation], max_pixels, workers)


def allocate(
    shape: tuple[int, ...], memmap_bytes: int = DEFAULT_MEMMAP_BYTES, spill_dir: Path | None = None
) -> np.ndarray:
    """An uninitialised uint8 array: in RAM up to `memmap_bytes`, else a memmap of a file in `spill_dir`."""
    if math.prod(shape) <= memmap_bytes:
        return np.empty(shape, dtype=np.uint8)
    # Already unlinked: the map keeps its own handle, and the space is freed when the last view of it goes.
    with tempfile.TemporaryFile(dir=spill_dir) as file:
        return np.memmap(file, dtype=np.uint8, mode="w+", shape=shape)


def _resize_arrays(arrays: np.ndarray, out: np.ndarray, mode: str) -> None:
    """[N, H, W] or [N, H, W, 3] uint8 → centre square resized into `out`, vectorised in chunks."""
    count, height, width = arrays.shape[:3]
    side, size = min(height, width), out.shape[-1]
    top, left = (height - side) // 2, (width - side) // 2
    channels = 1 if arrays.ndim == 3 else 3
    step = max(1, _CHUNK_BYTES // (4 * channels * max(side, size) ** 2))
    for start in range(0, count, step):
        # A copy: torch wants writable memory, and a source read straight from a file's bytes is read-only.
        chunk = torch.from_numpy(arrays[start : start + step, top : top + side, left : left + side].copy())
        chunk = chunk.unsqueeze(1) if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)
        if side != size:
            resized = F.interpolate(chunk.float(), size=(size, size), mode=mode, antialias=mode != "nearest-exact")
            chunk = resized.round_().clamp_(0, 255).to(torch.uint8)  # bicubic overshoots past 0..255
        out[start : start + len(chunk)] = chunk.expand(-1, 3, -1, -1).numpy()


def _decode_files(
    paths: list[Path],
    labels: np.ndarray,
    out: np.ndarray,
    resample: Image.Resampling,
    max_pixels: int,
    workers: int | None,
) -> DecodedSplit:
    def decode(i: int) -> tuple[int, int] | Skipped:
        try:
            image, full_size = open_scaled(paths[i], max_pixels, min_side=out.shape[-1])
        except BadImage as bad:
            return Skipped(str(paths[i]), bad.reason)
        out[i] = square_crop(image, out.shape[-1], resample)
        return full_size

    with quiet_size_warnings(), ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(decode, range(len(paths))))
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[Skipped] = []
    for i, result in enumerate(results):
        if isinstance(result, Skipped):
            logger.warning("skipped %s: %s", result.path, result.reason)
            skipped.append(result)
        else:
            kept.append(i)
            sizes.append(result)
    # Close the gaps in order: each image moves to an index at or below its own, so none is lost unread.
    for target, source in enumerate(kept):
        if target != source:
            out[target] = out[source]
    return DecodedSplit(
        images=torch.from_numpy(out[: len(kept)]),
        labels=torch.from_numpy(labels[kept].astype(np.int64)),
        sizes=sizes,
        skipped=skipped,
        paths=[paths[i] for i in kept],
    )


def prepare(dataset: Dataset, size: int, names: Sequence[str] | None = None, **options: Any) -> PreparedData:
    """Decode the splits `names` of `dataset` (default: every one; options as for decode_split), refusing
    what cannot train.

    Raises DataError when a class has no usable training image left, or fewer than 2 classes remain.
    """
    data = decode_splits(dataset, size, list(dataset.splits) if names is None else names, **options)
    _check_train(dataset, data.splits["train"])
    return data


def decode_splits(dataset: Dataset, size: int, names: Sequence[str], **options: Any) -> PreparedData:
    """Decode the splits `names` of `dataset` alone, with one summary line for the files skipped. Scoring
    reads only the splits it scores, and so reports no bad file it does not read: `evaluate` of a
    Fashion-MNIST model on its 10,000 test images took 26 s against 32 s with all 70,000 decoded, whose
    60,000 training images at 96 px are 1.7 GB of uint8."""
    splits = {name: decode_split(dataset.splits[name], size, **options) for name in names}
    skipped = [bad for decoded in splits.values() for bad in decoded.skipped]
    if skipped:
        logger.warning(skip_summary(skipped, sum(len(dataset.splits[name]) for name in names)))
    return PreparedData(list(dataset.classes), splits, skipped, list(dataset.notes), dataset.tasks)


def skip_summary(skipped: list[Skipped], total: int) -> str:
    """'skipped 7 of 120 files: 3 truncated image, 2 empty file, 2 not an image', most frequent first."""
    reasons = sorted(Counter(bad.reason for bad in skipped).items(), key=lambda item: (-item[1], item[0]))
    return f"skipped {len(skipped)} of {total} files: " + ", ".join(f"{n} {r}" for r, n in reasons)


def _check_train(dataset: Dataset, train: DecodedSplit) -> None:
    if len(dataset.classes) < 2:
        raise DataError(f"{dataset.name} has fewer than 2 classes: a classifier needs at least 2")
    listed_all = label_matrix(dataset.splits["train"].labels)
    usable_all = label_matrix(train.labels.numpy())
    for column, (task, classes) in enumerate(dataset.heads.items()):
        of_task = f" of task '{task}'" if dataset.tasks else ""
        before, after = (_class_counts(m[:, column], len(classes)) for m in (listed_all, usable_all))
        for name, listed, usable in zip(classes, before, after, strict=True):
            if usable == 0 and listed:
                files = "file" if listed == 1 else "files"
                raise DataError(
                    f"class '{name}'{of_task} has no usable images left after skipping {listed} bad {files}"
                )
            if usable == 0:
                raise DataError(f"class '{name}'{of_task} has no training images")


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class; missing labels (-1) are no class."""
    return np.bincount(labels[labels >= 0], minlength=num_classes)
