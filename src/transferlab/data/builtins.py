"""Data sets known by name: scikit-learn's digits, Fashion-MNIST, a small shipped Fashion-MNIST sample, and
"-m" versions of each blended with colour photographs (see blended.py), a shifted domain for adaptation."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from transferlab.data.blended import blended_dataset
from transferlab.data.splitting import carve
from transferlab.data.types import Dataset, Split
from transferlab.errors import DataError

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Debian's dataset-fashion-mnist package puts the four .gz files here.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# The published MD5 of each .gz file, from the data set's README (Debian's recompressed copies differ).
FASHION_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
SAMPLE_FILE = "fashion-mnist-sample.npz"


def cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/transferlab, by default ~/.cache/transferlab."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "transferlab"


def fashion_mnist_dirs() -> list[Path]:
    """The folders searched for Fashion-MNIST's IDX files, first match wins."""
    env = os.environ.get("TRANSFERLAB_DATA")
    dirs = [Path(env), Path(env) / "fashion-mnist"] if env else []
    return [*dirs, DEBIAN_DIR, cache_dir() / "fashion-mnist"]


def find_fashion_mnist() -> dict[str, Path] | None:
    """The four IDX files (plain or .gz) from the first folder that holds all of them, or None."""
    for folder in fashion_mnist_dirs():
        found = {stem: path for stem in FASHION_MD5 if (path := _idx_file(folder, stem))}
        if len(found) == len(FASHION_MD5):
            return found
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array of bytes (MNIST's file format: a big-endian header, then the values), plain or gzipped."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    header = 4 + 4 * data[3]
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    if len(data) != header + math.prod(shape):
        raise DataError(f"{path} is truncated: its header promises {shape} values")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def download_fashion_mnist(folder: Path) -> dict[str, Path]:
    """Fetch the four published .gz files into `folder`, each checked against its published MD5."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for stem, md5 in FASHION_MD5.items():
        target = folder / f"{stem}.gz"
        if not target.is_file():
            _fetch(FASHION_URL + target.name, target, md5)
        found[stem] = target
    return found


def _fetch(url: str, target: Path, md5: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as err:
        raise DataError(
            f"fashion-mnist is not on disk and downloading {url} failed ({err}): put its IDX files in "
            "$TRANSFERLAB_DATA, or install Debian's dataset-fashion-mnist package"
        ) from err
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise DataError(f"downloaded {url}, but it does not match its published MD5: try again")
    partial = target.with_name(target.name + ".part")  # renamed only once whole, so the cache never holds half
    partial.write_bytes(data)
    partial.replace(target)


def fashion_dataset(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Dataset:
    """A Fashion-MNIST Dataset from (images, labels) pairs."""
    return Dataset(
        name,
        list(FASHION_CLASSES),
        {
            "train": Split(labels=train[1].astype(np.int64), arrays=train[0]),
            "test": Split(labels=test[1].astype(np.int64), arrays=test[0]),
        },
    )


def _fashion_mnist() -> Dataset:
    files = find_fashion_mnist() or download_fashion_mnist(cache_dir() / "fashion-mnist")
    arrays = {stem: read_idx(path) for stem, path in files.items()}
    return fashion_dataset(
        "fashion-mnist",
        (arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]),
        (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]),
    )


def _fashion_mnist_sample() -> Dataset:
    with (
        (resources.files("transferlab.data") / "builtin" / SAMPLE_FILE).open("rb") as file,
        np.load(file) as npz,
    ):
        return fashion_dataset(
            "fashion-mnist-sample",
            (npz["train_images"], npz["train_labels"]),
            (npz["test_images"], npz["test_labels"]),
        )


def _digits() -> Dataset:
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # its values run 0..16
    everything = Split(labels=bunch.target.astype(np.int64), arrays=images)
    # It ships as one set: a fixed stratified quarter becomes its test split, the same on every machine.
    train, test = carve(everything, 0.25, seed=0)
    return Dataset("digits", [str(d) for d in range(10)], {"train": train, "test": test})


def _fashion_mnist_m() -> Dataset:
    return blended_dataset(_fashion_mnist(), "fashion-mnist-m")


def _fashion_mnist_sample_m() -> Dataset:
    return blended_dataset(_fashion_mnist_sample(), "fashion-mnist-sample-m")


def _digits_m() -> Dataset:
    return blended_dataset(_digits(), "digits-m")


_REGISTRY: dict[str, tuple[str, Callable[[], Dataset]]] = {
    "digits": ("scikit-learn's 8×8 handwritten digits: 1,797 grey images, 10 classes", _digits),
    "fashion-mnist": (
        "Zalando's 28×28 clothes: 60,000 train + 10,000 test, 10 classes (local IDX files or download)",
        _fashion_mnist,
    ),
    "fashion-mnist-sample": (
        "3,000 Fashion-MNIST images shipped with transferlab: 200 train + 100 test per class",
        _fashion_mnist_sample,
    ),
    "digits-m": (
        "digits blended with crops of colour photos, MNIST-M style: same labels and splits, shifted pixels",
        _digits_m,
    ),
    "fashion-mnist-m": (
        "fashion-mnist blended with crops of colour photos, MNIST-M style: same labels and splits, shifted pixels",
        _fashion_mnist_m,
    ),
    "fashion-mnist-sample-m": (
        "fashion-mnist-sample blended with crops of colour photos, MNIST-M style: for tests and examples",
        _fashion_mnist_sample_m,
    ),
}
BUILTINS: dict[str, str] = {name: description for name, (description, _) in _REGISTRY.items()}


def load_builtin(name: str) -> Dataset:
    """The built-in data set called `name` (a key of BUILTINS)."""
    return _REGISTRY[name][1]()
