"""Accuracy per strategy, with transferlab's defaults, on Fashion-MNIST with 100 labelled images per class
(seeded; 90 train + 10 validation), scored on all 10,000 test images; wall time per row. One more row:
logistic regression on raw pixels, the floor any transfer has to clear.

    python benchmarks/accuracy.py [--per-class 100] [--strategies head,partial:5,partial:2,full,scratch,auto]

`auto` is the default strategy: the advisor measures the data, then picks the strategy and its settings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from transferlab.compare import compare, format_compare
from transferlab.config import FitConfig
from transferlab.data import load_source


def raw_pixels(per_class: int, seed: int) -> tuple[float, float]:
    """(test accuracy, seconds) of logistic regression on the same labelled images' raw pixels."""
    start = time.monotonic()
    data = load_source("fashion-mnist", per_class=per_class, seed=seed)
    train = [data.splits[s] for s in ("train", "val")]
    x = np.concatenate([s.arrays.reshape(len(s), -1) for s in train]) / 255.0
    y = np.concatenate([s.labels for s in train])
    test = data.splits["test"]
    model = LogisticRegression(max_iter=2000, C=0.1).fit(x, y)
    return float(model.score(test.arrays.reshape(len(test), -1) / 255.0, test.labels)), time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--strategies", default="head,partial:5,partial:2,full,scratch,auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="accuracy-")))
    args = parser.parse_args()
    config = FitConfig(per_class=args.per_class, seed=args.seed)
    rows = compare("fashion-mnist", args.strategies.split(","), config, args.out)
    pixels, seconds = raw_pixels(args.per_class, args.seed)
    print(f"\ntf_efficientnet_lite0 (ImageNet), Fashion-MNIST {args.per_class}/class, defaults, 10,000 test images")
    print(format_compare(rows))
    print(f"{'raw pixels':<14} {pixels:>9.4f} {'':>9} {seconds:>8.1f}   (logistic regression)")
    print(f"run dirs: {args.out}")


if __name__ == "__main__":
    main()
