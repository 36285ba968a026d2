"""Domain-shifted "-M" data sets: grey images blended with colour photographs, as MNIST-M was built.

A domain-adaptation benchmark needs a target domain whose labels mean the same as the source's but whose pixels
look different. MNIST-M (Ganin et al. 2016, the DANN paper) made one by blending each MNIST digit with a random
crop of a colour photograph (from BSDS500): output = |crop - digit|. The shapes, and so the labels, survive; the
background, the colours and the contrast do not. BSDS500 is not offline, so this module uses the colour
photographs scikit-image ships, split into two fixed, disjoint groups: the train splits are blended with one,
the test split with the other, so a model adapted on the target's train images never saw a test background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from transferlab.data.types import SPLITS, Dataset
from transferlab.errors import DataError

# Natural colour photographs that scikit-image installs with its wheel (no download). Left out: its grey
# images, hubble_deep_field and retina (mostly black: a black crop leaves the image as it was), and
# immunohistochemistry and colorwheel (a microscope slide and a synthetic chart, not scenes). `cat` is the
# same file as `chelsea`, so only one of the two names is used.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket")
TEST_PHOTOS = ("chelsea", "motorcycle")
PHOTO_GROUPS = {"train": TRAIN_PHOTOS, "val": TRAIN_PHOTOS, "test": TEST_PHOTOS}


def photo_pool(names: Sequence[str]) -> list[np.ndarray]:
    """The photographs called `names` (of TRAIN_PHOTOS and TEST_PHOTOS), each a [H, W, 3] uint8 RGB array."""
    try:
        from skimage import data  # imported here: only the -m data sets need scikit-image
    except ImportError as err:
        raise DataError("the blended '-m' data sets need scikit-image: pip install 'transferlab[blended]'") from err
    loaders = {
        "astronaut": data.astronaut,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "chelsea": data.chelsea,
        "motorcycle": lambda: data.stereo_motorcycle()[0],  # the left view; the right one is nearly the same
    }
    unknown = [name for name in names if name not in loaders]
    if unknown:
        raise DataError(f"no such photograph: {', '.join(unknown)} (known: {', '.join(loaders)})")
    return [np.asarray(loaders[name](), dtype=np.uint8) for name in names]


def blend(images: np.ndarray, photos: Sequence[np.ndarray], seed: int | Sequence[int]) -> np.ndarray:
    """Each of the grey `images` ([N, H, W] uint8) blended with a random H×W crop of a random one of `photos`:
    |crop - image| per channel, as [N, H, W, 3] uint8. The same `seed` gives the same crops."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"blending takes [N, H, W] uint8 grey images, got {images.dtype} of shape {images.shape}")
    if not photos or any(photo.ndim != 3 or photo.shape[2] != 3 for photo in photos):
        raise DataError("blending needs at least one photograph, each an [H, W, 3] RGB array")
    count, height, width = images.shape
    # How many top-left corners each photo offers an H×W crop: one per row and column the crop can start at.
    corners = np.array([(photo.shape[0] - height + 1, photo.shape[1] - width + 1) for photo in photos])
    if (corners < 1).any():
        raise DataError(f"a photograph is smaller than the {height}×{width} images to blend")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(photos), size=count)
    starts = rng.integers(0, corners[which])  # [N, 2]: each image's crop corner, within its own photo
    blended = np.empty((count, height, width, 3), dtype=np.uint8)
    for k, photo in enumerate(photos):  # one gather per photo, not a Python loop per image
        chosen = np.flatnonzero(which == k)
        # Every H×W window of the photo, as a view: indexing it by corners copies just the chosen crops.
        windows = sliding_window_view(photo, (height, width), axis=(0, 1))  # [rows, cols, 3, H, W]
        crops = windows[starts[chosen, 0], starts[chosen, 1]].transpose(0, 2, 3, 1)  # [n, H, W, 3]
        grey = images[chosen, :, :, None]
        # |crop - image| as max - min: exact in uint8, where crop - image would wrap around (10 - 250 = 16).
        blended[chosen] = np.maximum(crops, grey) - np.minimum(crops, grey)
    return blended


def blended_dataset(dataset: Dataset, name: str, seed: int = 0) -> Dataset:
    """`dataset` with every split's grey images blended (see `blend`): train and val with TRAIN_PHOTOS, test with
    TEST_PHOTOS. Classes, labels and sample order are kept, so sample i of a split is sample i of the source's."""
    pools = {}
    splits = {}
    for split_name, split in dataset.splits.items():
        if split.arrays is None or split.arrays.ndim != 3:
            raise DataError(f"{dataset.name}'s {split_name} split is not in-memory grey images: it cannot be blended")
        group = PHOTO_GROUPS[split_name]
        if group not in pools:
            pools[group] = photo_pool(group)
        # Each split draws from its own stream, so train's crops do not depend on how big test is.
        arrays = blend(split.arrays, pools[group], seed=[seed, SPLITS.index(split_name)])
        splits[split_name] = replace(split, arrays=arrays)
    return Dataset(name, list(dataset.classes), splits, notes=list(dataset.notes), tasks=dataset.tasks)
