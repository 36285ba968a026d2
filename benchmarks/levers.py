"""The default `fit` against variants that each change a setting, over several seeds, side by side: which
levers move test accuracy, by how much beyond the noise of a draw, and at what cost in time.

Each run is one whole `transferlab fit fashion-mnist --per-class 100 --seed S` process (the seed draws the 900
training and 100 validation images and everything random in training), scored on all 10,000 test images.
A variant's gain is paired: its accuracy minus the default's on the same seed, so the draw's own luck cancels.

    python benchmarks/levers.py [--seeds 3] [--variant "mixup=--mix mixup --mix-alpha 0.2" ...] [--flags "..."]

Without --variant it runs the levers benchmarks/README.md reports: timm's weight decay rule, mixup, a fifth of
the images for validation (the default until the eighth session) rather than a tenth, and a refit on train+val.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from time_to_accuracy import Point, fit_process

REPORTED = [
    "timm decay=--no-decay-biases-and-norms",
    "mixup 0.2=--mix mixup --mix-alpha 0.2",
    "val 0.2=--val-fraction 0.2",
    "refit=--refit",
]


def spread(values: list[float], sign: str = "") -> str:
    """mean ± standard deviation, in points; `sign="+"` writes a gain's sign."""
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.2f} ± {deviation:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variant", action="append", help="NAME=FLAGS, repeatable (default: the reported ones)")
    parser.add_argument("--flags", default="", help="fit flags every run takes, e.g. '--per-class 20'")
    args = parser.parse_args()
    variants = {name: flags.split() for name, _, flags in (v.partition("=") for v in args.variant or REPORTED)}
    if "default" in variants:
        parser.error("'default' is the series without changes: name the variant otherwise")
    series: dict[str, list[str]] = {"default": []} | variants
    points: dict[str, list[Point]] = {name: [] for name in series}
    with tempfile.TemporaryDirectory(prefix="levers-") as temp:
        for seed in range(args.seeds):
            for name, flags in series.items():
                out = Path(temp) / f"{name}-{seed}".replace(" ", "_")
                flags_of_run = [*args.flags.split(), *flags, "--seed", str(seed)]
                points[name].append(fit_process(flags_of_run, None, out, name))
    default = [100 * p.accuracy for p in points["default"]]
    shared = f", then {args.flags}" if args.flags else ""
    print(f"\nfit fashion-mnist --per-class 100{shared}; 10,000 test images; seeds 0..{args.seeds - 1}, one at a time")
    columns = ("accuracy (mean ± sd)", 21), ("per seed", 20), ("gain (paired)", 15), ("seconds", 8), ("epochs", 7)
    print(f"{'series':<24} " + " ".join(f"{title:>{width}}" for title, width in columns))
    for name, mine in points.items():
        accuracies = [100 * p.accuracy for p in mine]
        gain = "" if name == "default" else spread([a - d for a, d in zip(accuracies, default, strict=True)], "+")
        each = " ".join(f"{a:.2f}" for a in accuracies)
        seconds = statistics.mean(p.seconds for p in mine)
        epochs = statistics.mean(p.epochs for p in mine)
        print(f"{name:<24} {spread(accuracies):>21} {each:>20} {gain:>15} {seconds:>8.0f} {epochs:>7.1f}")


if __name__ == "__main__":
    main()
