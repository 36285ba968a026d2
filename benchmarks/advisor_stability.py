"""Does the advisor decide the same way on the same kind of data? Several draws of the same task, each judged
against every fixed strategy.

For each data set (Fashion-MNIST, scikit-learn's digits) and size (images per class), draw `--draws` training
sets from the built-in's training split (draw d = seed d: its images, its validation split and its training
seed). On each draw run the default `fit` (`auto`: the advisor's pick, set up as it sets it up) and every fixed
strategy at its defaults: `head`, `partial:K` (K = the pick's depth, or the middle stage), `full`, `scratch`.
All are scored on the same test images (the first --test of the built-in's test split), so differences are
paired: the table gives the pick's gap to the best fixed strategy and that gap's standard error.

The advisor's thresholds were set on the situations benchmark and the shipped sample (Fashion-MNIST seed 0);
the rule for a large source (scratch only below random features) was checked on digits draws 6 and 7. Draws
1..5, the judging draws, are none of those.

Results are kept in --out after every fit; a rerun skips what is there (the study is long on a CPU).

    python benchmarks/advisor_stability.py [--datasets fashion-mnist,digits] [--sizes 20,100] [--draws 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from transferlab.classifier import load
from transferlab.config import FitConfig
from transferlab.data.builtins import load_builtin
from transferlab.fitting import fit

GOAL = 1.0  # points: the pick within this of the best fixed strategy, on every draw
FIXED = ("head", "partial", "full", "scratch")


def arrays(dataset: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    part = load_builtin(dataset).splits[split]
    assert part.arrays is not None, "the built-ins are in memory"
    return part.arrays[:limit], np.asarray(part.labels)[:limit]


def run_one(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], config: FitConfig, work: Path
) -> dict:
    """One fit on the draw; its per-image test hits and what it ran as."""
    started = time.monotonic()
    result = fit(train, config, work, quiet=True)
    hits = load(work).predict(test[0]).astype(str) == test[1].astype(str)  # classes_ are the labels as text
    seconds = time.monotonic() - started
    return {
        "strategy": result.strategy.name,
        "frozen_stages": result.strategy.frozen_stages,
        "backbone_lr_ratio": result.strategy.backbone_lr_ratio,
        "stages": result.model.backbone.num_stages,
        "accuracy": float(hits.mean()),
        "hits": hits.astype(int).tolist(),
        "seconds": seconds,
    }


def fixed_name(strategy: str, pick: dict, stages: int) -> str:
    if strategy != "partial":
        return strategy
    depth = pick["frozen_stages"] if pick["strategy"].startswith("partial") else stages // 2
    return f"partial:{depth}"


def paired_gap(best: list[int], pick: list[int]) -> tuple[float, float]:
    """The best fixed strategy's accuracy minus the pick's, in points, with its paired standard error."""
    diff = np.asarray(best, float) - np.asarray(pick, float)
    return 100 * float(diff.mean()), 100 * float(diff.std(ddof=1) / math.sqrt(len(diff)))


def study(args: argparse.Namespace, results: dict) -> None:
    for dataset in args.datasets.split(","):
        train_all = arrays(dataset, "train")
        test = arrays(dataset, "test", args.test)
        for per_class in [int(n) for n in args.sizes.split(",")]:
            for draw in [int(d) for d in args.draws.split(",")]:
                key = f"{dataset}/{per_class}/{draw}"
                row = results.setdefault(key, {})
                base = FitConfig(per_class=per_class, seed=draw, report=False)
                with tempfile.TemporaryDirectory(prefix="stability-") as temp:
                    if "auto" not in row:
                        row["auto"] = run_one(train_all, test, base, Path(temp) / "auto")
                        args.save(results)
                    pick = row["auto"]
                    for strategy in FIXED:
                        name = fixed_name(strategy, pick, pick["stages"])
                        if name in row:
                            continue
                        config = base.updated(strategy=name)
                        row[name] = run_one(train_all, test, config, Path(temp) / name.replace(":", ""))
                        args.save(results)
                line = ", ".join(f"{name} {100 * r['accuracy']:.1f}" for name, r in row.items())
                print(f"  {key}: {line}", flush=True)


def table(results: dict) -> None:
    print(
        f"\n{'data set':<14} {'/class':>6} {'draw':>4}  {'pick':<18} {'pick %':>6}  {'best fixed':<11} "
        f"{'best %':>6} {'gap ± se':>11}  {'head':>5} {'partial':>7} {'full':>5} {'scratch':>7}  goal"
    )
    misses = 0
    for key, row in results.items():
        if "auto" not in row or len(row) < 5:
            continue  # the draw is not finished
        dataset, per_class, draw = key.split("/")
        pick = row["auto"]
        fixed = {name: r for name, r in row.items() if name != "auto"}
        best = max(fixed, key=lambda name: fixed[name]["accuracy"])
        gap, se = paired_gap(fixed[best]["hits"], pick["hits"])
        partial = next(name for name in fixed if name.startswith("partial"))
        verdict = "ok" if gap <= GOAL else "MISS"
        misses += verdict == "MISS"
        label = f"{pick['strategy']} x{pick['backbone_lr_ratio']:g}"
        print(
            f"{dataset:<14} {per_class:>6} {draw:>4}  {label:<18} {100 * pick['accuracy']:>6.1f}  {best:<11} "
            f"{100 * fixed[best]['accuracy']:>6.1f} {gap:>5.1f} ± {se:<3.1f}  "
            f"{100 * fixed['head']['accuracy']:>5.1f} {100 * fixed[partial]['accuracy']:>7.1f} "
            f"{100 * fixed['full']['accuracy']:>5.1f} {100 * fixed['scratch']['accuracy']:>7.1f}  {verdict}"
        )
    print(f"\ngoal: the pick within {GOAL:g} point of the best fixed strategy on every draw; {misses} misses")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--sizes", default="20,100", help="comma-separated images per class")
    parser.add_argument("--draws", default="1,2,3,4,5", help="comma-separated draw seeds")
    parser.add_argument("--test", type=int, default=3000, help="test images per data set (digits has 450)")
    parser.add_argument("--out", type=Path, default=Path("runs/advisor_stability.json"))
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}

    def save(state: dict) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_suffix(".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(args.out)

    args.save = save
    study(args, results)
    table(results)


if __name__ == "__main__":
    main()
