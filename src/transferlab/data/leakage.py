"""Finds images whose exact bytes are in train and also in val or test: such leaks inflate every score."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from transferlab.data.listing import name_some
from transferlab.data.types import Dataset, Split

Key = bytes | None


def duplicate_notes(dataset: Dataset, limit: int = 3) -> list[str]:
    """One note for each of val and test that shares images with train, naming the first `limit` pairs."""
    train = dataset.splits["train"]
    notes = []
    for name in ("val", "test"):
        if name not in dataset.splits:
            continue
        other = dataset.splits[name]
        pairs = [_pair_name(train, other, name, i, j) for j, i in _shared(train, other)]
        if pairs:
            notes.append(
                f"{len(pairs)} {name} images are identical to train images ({name_some(pairs, limit)}): "
                f"{name} scores will read too high"
            )
    return notes


def _shared(train: Split, other: Split) -> list[tuple[int, int]]:
    """(index in other, index in train) for each sample of `other` whose bytes equal a train sample's."""
    if train.arrays is not None and other.arrays is not None:
        train_keys, other_keys = _array_keys(train.arrays), _array_keys(other.arrays)
    else:
        train_keys, other_keys = _file_keys(train.paths or [], other.paths or [])
    first: dict[bytes, int] = {}
    for i, key in enumerate(train_keys):
        if key is not None:
            first.setdefault(key, i)
    return [(j, first[key]) for j, key in enumerate(other_keys) if key in first]


def _pair_name(train: Split, other: Split, name: str, i: int, j: int) -> str:
    """'val/cat/a.png = train/cat/b.png' (relative to the folder both are in), or 'val[3] = train[12]'."""
    if train.paths is None or other.paths is None:
        return f"{name}[{j}] = train[{i}]"
    base = os.path.commonpath([other.paths[j].parent, train.paths[i].parent])
    return f"{os.path.relpath(other.paths[j], base)} = {os.path.relpath(train.paths[i], base)}"


def _array_keys(arrays: np.ndarray) -> list[Key]:
    return [_digest(image.tobytes()) for image in arrays]


def _file_keys(train: list[Path], other: list[Path]) -> tuple[list[Key], list[Key]]:
    # Reading files is the cost, so only files whose byte size occurs on both sides are read and hashed.
    train_sizes, other_sizes = _sizes(train), _sizes(other)
    both = (set(train_sizes) & set(other_sizes)) - {None, 0}  # empty files are bad images, not leaks
    return _read_keys(train, train_sizes, both), _read_keys(other, other_sizes, both)


def _sizes(paths: list[Path]) -> list[int | None]:
    sizes: list[int | None] = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except OSError:  # reported when it is decoded; it cannot leak what cannot be read
            sizes.append(None)
    return sizes


def _read_keys(paths: list[Path], sizes: list[int | None], wanted: set[int | None]) -> list[Key]:
    keys: list[Key] = []
    for path, size in zip(paths, sizes, strict=True):
        try:
            keys.append(_digest(path.read_bytes()) if size in wanted else None)
        except OSError:
            keys.append(None)
    return keys


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
