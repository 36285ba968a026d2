"""What a longer time budget could buy beyond one model: several default fits of one task, combined.

Each member is a whole `transferlab fit fashion-mnist --per-class N --seed S --sample-seed S0 --no-report`
process, one after another, timed as a user would. S0, the first seed, draws the labelled images, the same
for every member; each seed draws its own train/validation split of them. Then, on all 10,000 test images,
through the public API (`load(...).predict_proba`, so each member scores as `predict` would: its flip,
bfloat16 where the CPU has it):

- each member alone;
- the first k members' probabilities averaged (an ensemble: k models to run at prediction);
- the first k members' weights averaged (a uniform "model soup", Wortsman et al., ICML 2022: one model's cost
  at prediction; the members share their pretrained start, which is what lets their weights average).

The seconds column is the members' whole processes added up, what `fit` would spend training them one after
another; an ensemble built into `fit` would pay importing, decoding and the advisor once.

    python benchmarks/ensemble.py [--seeds 0,1,2,3] [--per-class 100] [--flags "--time-limit 75"]
    python benchmarks/ensemble.py --runs RUN_DIR ... [--seconds S ...]     (score run dirs already fitted)
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferlab import TransferClassifier, load
from transferlab.data import load_source


def fit_member(seed: int, sample_seed: int, args: argparse.Namespace, out: Path) -> float:
    """Seconds of one whole default fit process."""
    command = [sys.executable, "-m", "transferlab", "fit", "fashion-mnist", f"--per-class={args.per_class}"]
    # each process one member: --ensemble 1, whatever members its --time-limit would hold; every member the
    # same labelled images (--sample-seed), each its own split of them (--seed)
    command += [f"--seed={seed}", f"--sample-seed={sample_seed}", "--no-report", "--ensemble=1", f"--out={out}"]
    command += shlex.split(args.flags)
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    return time.monotonic() - started


def soup_probabilities(
    soup: TransferClassifier, states: list[dict[str, torch.Tensor]], images: np.ndarray
) -> np.ndarray:
    """The probabilities of `soup`, a loaded copy of the first member, given the `states` averaged (integer
    buffers: the first's)."""
    averaged = {
        name: torch.stack([state[name].float() for state in states]).mean(0).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[0].items()
    }
    soup.model_.load_state_dict(averaged)
    return soup.predict_proba(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--flags", default="", help="more `fit` flags for every member, as one string")
    parser.add_argument("--runs", nargs="*", type=Path, help="score these run dirs instead of fitting members")
    parser.add_argument("--seconds", nargs="*", type=float, help="with --runs: each run's whole-process seconds")
    args = parser.parse_args()
    dataset = load_source("fashion-mnist")
    test = dataset.splits["test"]
    assert test.arrays is not None, "the built-in holds arrays"
    with tempfile.TemporaryDirectory(prefix="ensemble-") as temp:
        runs, seconds = args.runs or [], args.seconds or []
        if not runs:
            seeds = [int(s) for s in args.seeds.split(",")]
            for seed in seeds:
                runs.append(Path(temp) / f"seed-{seed}")
                seconds.append(fit_member(seed, seeds[0], args, runs[-1]))
                print(f"  member seed {seed}: {seconds[-1]:.0f} s", flush=True)
        models = [load(run) for run in runs]
        assert all([str(c) for c in model.classes_] == dataset.classes for model in models), "columns = labels"
        members = [model.predict_proba(test.arrays) for model in models]
        states = [model.model_.state_dict() for model in models]
        soup = load(runs[0])  # the holder of the averaged weights
        print(f"\nFashion-MNIST {args.per_class}/class, default fit {args.flags}, 10,000 test images")
        print(f"{'members':>7} {'seconds':>8} {'alone':>7} {'ensemble':>9} {'soup':>7}")
        for k in range(1, len(runs) + 1):
            alone = np.mean(members[k - 1].argmax(1) == test.labels)
            ensemble = np.mean(np.mean(members[:k], axis=0).argmax(1) == test.labels)
            souped = members[0] if k == 1 else soup_probabilities(soup, states[:k], test.arrays)  # one: itself
            soup_accuracy = np.mean(souped.argmax(1) == test.labels)
            spent = f"{sum(seconds[:k]):>8.0f}" if len(seconds) >= k else f"{'?':>8}"
            print(f"{k:>7} {spent} {100 * alone:>6.2f}% {100 * ensemble:>8.2f}% {100 * soup_accuracy:>6.2f}%")


if __name__ == "__main__":
    main()
