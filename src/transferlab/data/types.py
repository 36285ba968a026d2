"""The value types that flow through the data layer: a source becomes a Dataset of Splits of samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_TASK = "label"  # the one task of a single-task source, named as its CSV column
# The names a folder or a manifest may use for each split (compared in lower case).
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why (one line each in every summary)."""

    path: str
    reason: str


@dataclass
class LabelledFiles:
    """Image files with their class names, as a folder or manifest lists them, before classes get indices:
    `labels` for one task, or `tasks` ({task: a class name or "" where missing, per file}) for several."""

    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, list[str]] = field(default_factory=dict)


def label_matrix(labels: np.ndarray) -> np.ndarray:
    """Labels as [N, T], one column per task (a single task's [N] becomes [N, 1])."""
    return labels.reshape(len(labels), -1)


def strata(labels: np.ndarray) -> np.ndarray:
    """The labels to stratify samples by: a single task's, or, of several tasks, the one with the fewest
    labelled samples (its classes are the ones a random split could leave out), missing (-1) as a stratum."""
    matrix = label_matrix(labels)
    return matrix[:, int(np.argmin((matrix >= 0).sum(0)))]


@dataclass
class Split:
    """One split's samples: either image files (`paths`) or in-memory uint8 images (`arrays`), never both.

    `arrays` is [N, H, W] (grey) or [N, H, W, 3] (RGB). `labels` is [N], indexing `Dataset.classes`, or, for
    a multi-task data set, [N, T] with one column per task of `Dataset.tasks` and -1 where a label is missing
    (scikit-learn's shape for multi-output targets). `extra` keeps a CSV manifest's additional columns, one
    list per column, aligned with the samples.
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
    """A named data set: its class names, its splits (always `train`; `val`, `test` when known), and notes.

    A multi-task data set also has `tasks`, {task: class names} in the order of its label columns; its
    `classes` are then the first task's, the one a single-task view of it predicts.
    """

    name: str
    classes: list[str]
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)
    tasks: dict[str, list[str]] | None = None

    @property
    def heads(self) -> dict[str, list[str]]:
        """{task: class names}; a single-task data set's one task is called `label`, as its CSV column."""
        return self.tasks or {DEFAULT_TASK: self.classes}

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: {split: {class: count}} (of the first task, for several)."""
        return {
            name: {c: int((label_matrix(split.labels)[:, 0] == i).sum()) for i, c in enumerate(self.classes)}
            for name, split in self.splits.items()
        }
