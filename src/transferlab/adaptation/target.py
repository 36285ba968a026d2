"""The target of domain adaptation: images from the domain the model must work on, whose labels are never
trained on.

A target is a folder (class subfolders or not), a CSV manifest, a built-in name or in-memory arrays. Its train
and val images lose their labels here, before anything else can read them; its test split, when it has one
with labels, keeps them, mapped onto the source's class names, to score the adapted model at the end.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from transferlab.data import Dataset, PreparedData, Split, decode_split, load_source
from transferlab.data.builtins import BUILTINS
from transferlab.data.cache import skip_summary
from transferlab.data.folder import read_unlabelled
from transferlab.data.sources import Source
from transferlab.data.splitting import carve
from transferlab.errors import DataError

logger = logging.getLogger("transferlab")
UNLABELLED = -1
# The most target images a domain classifier reads (it is stable by then), and the fewest it can cross-fit
# over 5 folds, each holding out images of both domains.
FEATURES_PER_DOMAIN = 2000
MIN_TARGET_IMAGES = 5


def load_target(source: Source, classes: list[str], seed: int = 0, val_fraction: float | None = None) -> Dataset:
    """The target as a Dataset over the source's `classes`: train and val unlabelled (-1), test (if any)
    labelled by class name. A folder without class subfolders is read as unlabelled images."""
    if _is_plain_folder(source):
        root = Path(source).expanduser()  # type: ignore[arg-type]
        files = read_unlabelled(root)
        if not files:
            raise DataError(f"the target {root} has no images")
        everything = Split(labels=np.full(len(files), UNLABELLED, dtype=np.int64), paths=files)
        train, val = carve(everything, val_fraction, seed)  # one stratum: every label is -1
        return Dataset(root.name, list(classes), {"train": train, "val": val})
    dataset = load_source(source, seed=seed, val_fraction=val_fraction)
    splits = {name: _unlabelled(split) for name, split in dataset.splits.items() if name != "test"}
    if "test" in dataset.splits:
        splits["test"] = _onto(dataset.splits["test"], dataset.classes, classes, dataset.name)
    return Dataset(dataset.name, list(classes), splits, notes=dataset.notes)


def _is_plain_folder(source: Source) -> bool:
    """A folder holding images but no subfolders: unlabelled images, which `load_source` would refuse."""
    if not isinstance(source, str | Path) or (isinstance(source, str) and source in BUILTINS):
        return False
    path = Path(source).expanduser()
    return path.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def _unlabelled(split: Split) -> Split:
    return replace(split, labels=np.full(len(split), UNLABELLED, dtype=np.int64))


def _onto(split: Split, names: list[str], classes: list[str], dataset: str) -> Split:
    """`split`'s labels, which index `names`, re-indexed into the source's `classes` by name."""
    unknown = sorted(set(names) - set(classes))
    present = {names[i] for i in np.unique(split.labels)}
    if unknown and present & set(unknown):
        raise DataError(
            f"the target {dataset}'s test split has classes the source lacks ({', '.join(unknown)}): "
            "a model trained on the source cannot name them"
        )
    index = np.array([classes.index(name) if name in classes else UNLABELLED for name in names])
    return replace(split, labels=index[split.labels])


def prepare_target(dataset: Dataset, size: int, interpolation: str) -> PreparedData:
    """Decode the target's splits; refuses a target with no usable training image."""
    splits = {name: decode_split(split, size, interpolation=interpolation) for name, split in dataset.splits.items()}
    skipped = [bad for decoded in splits.values() for bad in decoded.skipped]
    if skipped:
        logger.warning("target: " + skip_summary(skipped, sum(len(split) for split in dataset.splits.values())))
    if len(splits["train"].labels) == 0:
        raise DataError(f"the target {dataset.name} has no usable images")
    return PreparedData(list(dataset.classes), splits, skipped, list(dataset.notes))


def has_labelled_test(target: PreparedData) -> bool:
    """Whether the target can score the adapted model: a test split with labels."""
    test = target.splits.get("test")
    return test is not None and bool((test.labels >= 0).any())


def sample_target(target: Source, classes: list[str], size: int, interpolation: str, seed: int) -> PreparedData:
    """The target's training images, at most FEATURES_PER_DOMAIN of them drawn with `seed`, decoded at `size`:
    all a domain classifier needs, without decoding a large target whole. Labels are never read."""
    dataset = load_target(target, classes, seed=seed)
    train = dataset.splits["train"]
    rows = np.sort(np.random.default_rng(seed).permutation(len(train))[:FEATURES_PER_DOMAIN])
    data = prepare_target(replace(dataset, splits={"train": train.subset(rows)}), size, interpolation)
    if len(data.splits["train"].labels) < MIN_TARGET_IMAGES:
        raise DataError(f"the target {dataset.name} has fewer than {MIN_TARGET_IMAGES} usable training images")
    return data
