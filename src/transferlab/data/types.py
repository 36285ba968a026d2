"""The value types that flow through the data layer: a source becomes a Dataset of Splits of samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
# The names a folder or a manifest may use for each split (compared in lower case).
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why (one line each in every summary)."""

    path: str
    reason: str


@dataclass
class LabelledFiles:
    """Image files with their class names, as a folder or manifest lists them, before classes get indices."""

    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Split:
    """One split's samples: either image files (`paths`) or in-memory uint8 images (`arrays`), never both.

    `arrays` is [N, H, W] (grey) or [N, H, W, 3] (RGB). `labels` indexes `Dataset.classes`.
    `extra` keeps a CSV manifest's additional columns, one list per column, aligned with the samples.
    """

    labels: np.ndarray
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        """The samples at `index`, in that order."""
        return Split(
            labels=self.labels[index],
            paths=[self.paths[i] for i in index] if self.paths is not None else None,
            arrays=self.arrays[index] if self.arrays is not None else None,
            extra={k: [v[i] for i in index] for k, v in self.extra.items()},
        )


@dataclass
class Dataset:
    """A named data set: its class names, its splits (always `train`; `val`, `test` when known), and notes."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: {split: {class: count}}."""
        return {
            name: {c: int((split.labels == i).sum()) for i, c in enumerate(self.classes)}
            for name, split in self.splits.items()
        }
