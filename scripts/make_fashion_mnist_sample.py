"""Build the Fashion-MNIST sample that ships inside transferlab (src/transferlab/data/builtin/).

It takes the first 200 train and the first 100 test images of each class, in file order, from Debian's
dataset-fashion-mnist package (apt-get install dataset-fashion-mnist), so every run writes the same images.
Usage: python scripts/make_fashion_mnist_sample.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.data.builtins import DEBIAN_DIR, SAMPLE_FILE, read_idx

TRAIN_PER_CLASS = 200
TEST_PER_CLASS = 100
TARGET = Path(__file__).resolve().parent.parent / "src" / "transferlab" / "data" / "builtin" / SAMPLE_FILE


def first_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first `count` samples of each class, in file order."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:count] for c in np.unique(labels)]))


def sample(prefix: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(DEBIAN_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(DEBIAN_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    index = first_per_class(labels, count)
    return images[index], labels[index]


def main() -> None:
    train_images, train_labels = sample("train", TRAIN_PER_CLASS)
    test_images, test_labels = sample("t10k", TEST_PER_CLASS)
    np.savez_compressed(
        TARGET,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    megabytes = TARGET.stat().st_size / 1e6
    print(f"wrote {TARGET} ({megabytes:.2f} MB): {len(train_labels)} train, {len(test_labels)} test")


if __name__ == "__main__":
    main()
