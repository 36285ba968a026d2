"""Deterministic, stratified choices of samples: N per class, and a validation split carved from train."""

from __future__ import annotations

import numpy as np

from transferlab.data.types import Split, label_matrix, strata


def per_class_subset(splits: dict[str, Split], per_class: int, seed: int) -> dict[str, Split]:
    """`per_class` images of each class, drawn by `seed` from train and val together; each stays in its split.

    Of several tasks, every task draws `per_class` of each of its classes among the images labelled for it, and
    the union is kept with all its labels (a task can end up with more where another task's draw carries its
    label too); a missing label is never a class. Only train and val are returned: test is never subsampled,
    since it measures the model whatever it learned from. Chosen samples keep their source order.
    """
    names = [name for name in ("train", "val") if name in splits]
    matrix = label_matrix(np.concatenate([splits[name].labels for name in names]))
    owner = np.concatenate([np.full(len(splits[name]), k) for k, name in enumerate(names)])
    local = np.concatenate([np.arange(len(splits[name])) for name in names])
    rng = np.random.default_rng(seed)
    chosen = np.unique(np.concatenate([draw_per_class(labels, per_class, rng) for labels in matrix.T]))
    return {name: splits[name].subset(local[chosen[owner[chosen] == k]]) for k, name in enumerate(names)}


def draw_per_class(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` samples of each class of `labels` [N] (all of a smaller class), drawn with `rng`;
    a missing label (-1) is no class. Sorted: the samples keep their source order."""
    classes = np.unique(labels[labels >= 0])
    drawn = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(drawn)) if drawn else np.zeros(0, dtype=np.int64)


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held out): `fraction` of each class held out, at least one of each class with two or more
    (of several tasks, stratified by the scarcest, see `strata`)."""
    rng = np.random.default_rng(seed)
    held = []
    key = strata(split.labels)
    for c in np.unique(key):
        members = rng.permutation(np.flatnonzero(key == c))
        count = 0 if len(members) < 2 else min(max(round(len(members) * fraction), 1), len(members) - 1)
        held.append(members[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return split.subset(np.setdiff1d(np.arange(len(split)), held_out)), split.subset(held_out)
