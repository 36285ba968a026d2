"""Test accuracy against wall time: the default `fit` with `--time-limit` as the one knob, as whole processes.

Each point is one `transferlab fit fashion-mnist --per-class 100 --time-limit T` process (seed 0: 900 training
and 100 validation images), timed from its start (importing torch, decoding, the advisor, the heads' warm
start, training, scoring all 10,000 test images) to its end; `none` is the default without a limit. The time
limit covers training alone, so each point's seconds are its limit plus what comes before and after. A
limit long enough buys several members, averaged (the first trains its whole schedule, the rest share what it
leaves: defaults.members_within); the table says how many. A second series changes one setting beside the
limit (--variant), to show where the curve's front lies.

After each process, its kept model scores the test images again with the test-time flip and without it
(paired: the same model both ways): what the flip adds, and what its second pass costs. Under a time limit
the default leaves it off (defaults.default_test_time_flip); this is the measurement behind that.

Prints a table and the goals, and draws the curve (docs/time_to_accuracy.png by default).

    python benchmarks/time_to_accuracy.py [--limits 25,50,75,none,480] [--variant "64 px=--image-size 64"]
        [--variant-limits 25,50] [--plot docs/time_to_accuracy.png]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

GOAL_ACCURACY, GOAL_SECONDS = 0.87, 100.0  # the first goal: 87% within 100 s
LATER_ACCURACY, LATER_SECONDS = 0.89, 600.0  # and 89% within 10 minutes


@dataclass
class Point:
    series: str
    limit: float | None
    seconds: float
    accuracy: float
    members: int  # models averaged: more than one where the limit held more (defaults.members_within)
    epochs: int  # in all members
    training: float  # seconds of training, all members': the rest is start-up, advisor and scoring
    flip_gain: float  # test accuracy with the test-time flip minus without, the same model
    flip_seconds: float  # what the flip's second pass adds to scoring the test images


def fit_process(flags: list[str], limit: float | None, out: Path, series: str) -> Point:
    command = [sys.executable, "-m", "transferlab", "fit", "fashion-mnist", "--per-class", "100", "--no-report"]
    command += [*flags, "--out", str(out)] + ([] if limit is None else ["--time-limit", str(limit)])
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.monotonic() - started
    summary = json.loads((out / "summary.json").read_text())
    # A limit that held several members (ensemble.py) leaves each one's epochs in members/K.
    trained = sorted((out / "members").iterdir()) if (out / "members").is_dir() else [out]
    epochs = sum(len((run / "metrics.jsonl").read_text().splitlines()) for run in trained)
    gain, cost = flip_gain(out)
    point = Point(
        series, limit, seconds, summary["accuracy"], len(trained), epochs, summary["train_seconds"], gain, cost
    )
    shown = "none" if limit is None else f"{limit:g} s"
    said = f"{100 * point.accuracy:.1f}% in {seconds:.0f} s ({point.epochs} epochs, {point.training:.0f} s training)"
    said += f", {point.members} members" if point.members > 1 else ""
    print(f"  {series}, limit {shown}: {said}", flush=True)
    return point


def flip_gain(out: Path) -> tuple[float, float]:
    """(accuracy with the test-time flip minus without, the flip's extra seconds) of the run's kept model."""
    from transferlab.classifier import load

    fitted = load(out)
    test = fitted.evaluate("fashion-mnist")  # decodes the test images (the first time) and warms up the passes
    scored = {}
    for flip in (True, False):
        fitted.model_.test_time_flip = flip
        started = time.monotonic()
        scored[flip] = (fitted.evaluate("fashion-mnist")["accuracy"], time.monotonic() - started)
    assert test["accuracy"] in (scored[True][0], scored[False][0])  # the same model, scored as fit scored it
    return scored[True][0] - scored[False][0], scored[True][1] - scored[False][1]


def limits(text: str) -> list[float | None]:
    return [None if item == "none" else float(item) for item in text.split(",") if item]


def plot(points: list[Point], path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for series in dict.fromkeys(p.series for p in points):
        mine = sorted((p for p in points if p.series == series), key=lambda p: p.seconds)
        ax.plot([p.seconds for p in mine], [100 * p.accuracy for p in mine], marker="o", label=series)
    for accuracy, seconds in ((GOAL_ACCURACY, GOAL_SECONDS), (LATER_ACCURACY, LATER_SECONDS)):
        ax.plot([0, seconds, seconds], [100 * accuracy] * 2 + [0], color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(bottom=min(100 * p.accuracy for p in points) - 1)
    ax.set_xlim(left=0)
    ax.set(
        xlabel="seconds, whole `transferlab fit` process (2-core CPU)",
        ylabel="test accuracy (%), 10,000 images",
        title="Fashion-MNIST, 100 labelled images per class",
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def goals(points: list[Point]) -> list[str]:
    lines = []
    for accuracy, seconds in ((GOAL_ACCURACY, GOAL_SECONDS), (LATER_ACCURACY, LATER_SECONDS)):
        within = [p for p in points if p.seconds <= seconds]
        best = max(within, key=lambda p: p.accuracy, default=None)
        verdict = "PASS" if best is not None and best.accuracy >= accuracy else "MISS"
        found = "nothing" if best is None else f"{100 * best.accuracy:.1f}% ({best.series}, {best.seconds:.0f} s)"
        lines.append(f"{verdict} ≥ {100 * accuracy:.0f}% within {seconds:.0f} s: the best within it is {found}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 480 s: the first member's schedule ends early enough to leave time for three more (ensemble.py)
    parser.add_argument("--limits", default="25,50,75,none,480", help="time limits of the default series (s)")
    parser.add_argument("--variant", default="64 px=--image-size 64", help="NAME=FLAGS of a second series")
    parser.add_argument("--variant-limits", default="25,50")
    parser.add_argument("--plot", type=Path, default=Path("docs/time_to_accuracy.png"))
    args = parser.parse_args()
    name, _, flags = args.variant.partition("=")
    runs = [("default", [], limit) for limit in limits(args.limits)]
    runs += [(name, flags.split(), limit) for limit in limits(args.variant_limits)] if name else []
    with tempfile.TemporaryDirectory(prefix="time-to-accuracy-") as temp:
        points = [
            fit_process(extra, limit, Path(temp) / f"run-{i}", series) for i, (series, extra, limit) in enumerate(runs)
        ]
    print("\nseries        limit  seconds  training  other  members  epochs  test accuracy  flip: points  seconds")
    for p in points:
        shown = "none" if p.limit is None else f"{p.limit:g}"
        print(
            f"{p.series:<12} {shown:>6} {p.seconds:>8.0f} {p.training:>9.0f} {p.seconds - p.training:>6.0f} "
            f"{p.members:>8} {p.epochs:>7}  {100 * p.accuracy:>12.1f}%  {100 * p.flip_gain:>+12.2f}  "
            f"{p.flip_seconds:>7.1f}"
        )
    print()
    for line in goals(points):
        print(line)
    plot(points, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
