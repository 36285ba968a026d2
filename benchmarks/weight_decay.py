"""Weight decay on biases and normalisation weights, or not (timm's optimizer factory leaves them out): the
default `fit` (`auto`) on Fashion-MNIST with 100 labelled images per class, all 10,000 test images, both
settings side by side over several seeds.

    python benchmarks/weight_decay.py [--seeds 3] [--per-class 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transferlab.config import FitConfig
from transferlab.fitting import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="weight-decay-")))
    args = parser.parse_args()
    rows: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for seed in range(args.seeds):
        for decay in (True, False):
            config = FitConfig(per_class=args.per_class, seed=seed, decay_biases_and_norms=decay)
            start = time.monotonic()
            result = fit("fashion-mnist", config, args.out / f"decay-{decay}-seed-{seed}", quiet=True)
            seconds = time.monotonic() - start
            rows[decay].append((result.scores["accuracy"], seconds))
            print(f"  seed {seed}, decay biases and norms {decay}: {result.scores['accuracy']:.4f} in {seconds:.0f} s")
    print(f"\nFashion-MNIST {args.per_class}/class, default fit (auto), 10,000 test images, seeds 0..{args.seeds - 1}")
    print(f"{'weight decay on':<34} {'accuracy (mean ± sd)':>22} {'per seed':>24} {'seconds':>8}")
    for decay, label in ((True, "every parameter"), (False, "matrices and kernels only")):
        accuracies = [100 * a for a, _ in rows[decay]]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        each = " ".join(f"{a:.1f}" for a in accuracies)
        seconds = statistics.mean(s for _, s in rows[decay])
        print(f"{label:<34} {statistics.mean(accuracies):>14.2f} ± {spread:<5.2f} {each:>24} {seconds:>8.0f}")
    print(f"run dirs: {args.out}")


if __name__ == "__main__":
    main()
