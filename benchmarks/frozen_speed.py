"""Frozen-backbone speed: `head` with the feature cache against the classic loop that runs the frozen
backbone on every image, every epoch (the torchvision tutorial's "ConvNet as fixed feature extractor").

Same data (Fashion-MNIST, 100 labelled images per class: 80 train + 20 validation), same model, same
augmentation preset, same 10 epochs, same optimizer; measured side by side in one process. The cached run
sees `--views` augmented views per image, cached once; the classic run sees a fresh augmentation every epoch.

    python benchmarks/frozen_speed.py [--size 128] [--views 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import mkdtemp

import torch

from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.defaults import CACHED_VIEWS
from transferlab.evaluate import probabilities
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import ImageBatches
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer


def run(data, test, config: FitConfig, cached: bool) -> tuple[float, float]:
    """(seconds, test accuracy) of a 10-epoch head fit, with or without the feature cache."""
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0")
    model = TransferModel(backbone, len(data.classes)).to(memory_format=torch.channels_last)
    strategy = parse_strategy("head")
    start = time.perf_counter()
    if cached:
        train, val, _ = make_batches(model, strategy, config, data, "cpu")
    else:
        normalizer = Normalizer(backbone.preprocessing)
        split, held = data.splits["train"], data.splits["val"]
        train = ImageBatches(split.images, split.labels, normalizer, config.batch_size, PRESETS[config.augment], True)
        val = ImageBatches(held.images, held.labels, normalizer, config.batch_size)
    Trainer(model, strategy, config, train, val, Path(mkdtemp())).fit()
    seconds = time.perf_counter() - start
    probs = probabilities(model, test.images, Normalizer(backbone.preprocessing))
    return seconds, (probs.argmax(1) == test.labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--views", type=int, default=CACHED_VIEWS["head"], help="augmented views cached per image")
    parser.add_argument("--test", type=int, default=2000, help="test images scored (not timed)")
    args = parser.parse_args()
    data = prepare(load_source("fashion-mnist", per_class=100, seed=0), args.size)
    test = data.splits["test"]
    test.images, test.labels = test.images[: args.test], test.labels[: args.test]
    config = FitConfig(
        strategy="head",
        epochs=10,
        lr=1e-3,
        batch_size=32,
        augment="light",
        cached_views=args.views,
        image_size=args.size,
    )
    classic_s, classic_acc = run(data, test, config, cached=False)
    cached_s, cached_acc = run(data, test, config, cached=True)
    print(f"\nhead on tf_efficientnet_lite0, Fashion-MNIST 100/class, {args.size} px, 10 epochs, augment light")
    print(f"{'loop':<48} {'seconds':>8} {'test acc':>9}")
    print(f"{'classic: frozen backbone run every epoch':<48} {classic_s:>8.1f} {classic_acc:>9.4f}")
    print(f"{f'transferlab: features cached ({args.views} augmented view(s))':<48} {cached_s:>8.1f} {cached_acc:>9.4f}")
    print(f"speed-up {classic_s / cached_s:.1f}x, accuracy difference {100 * (cached_acc - classic_acc):+.1f} points")


if __name__ == "__main__":
    main()
