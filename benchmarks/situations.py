"""The four situations on real data: size (small/large) x similarity to the source (similar/dissimilar).

Source 1 is a model pretrained by transferlab itself: timm's tiny `test_efficientnet` trained from scratch on
all Fashion-MNIST training images of classes 0-4. Targets:
  similar    Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot: same domain, new classes)
  same task  Fashion-MNIST classes 0-4 again, from the test file the source never saw: half of its 5,000
             images to learn from, half to score on (the most similar a target can be)
  dissimilar scikit-learn's handwritten digits (8x8, upsampled), a different domain entirely
  small      10 labelled images per class; large: 500 (similar) or every training digit (~135, dissimilar)
Source 2 is the ImageNet-pretrained EfficientNet-Lite0 on Fashion-MNIST (all ten classes), 10 and 500 per class.

Every strategy runs with transferlab's defaults (head, partial at the advisor's depth and one other, full,
scratch), averaged over seeds for source 1; the advisor's pick and its cost are reported beside them.

    python benchmarks/situations.py [--seeds 3] [--lite-time-limit 150] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from transferlab.advisor import advise
from transferlab.classifier import load
from transferlab.config import FitConfig, resolve_device
from transferlab.data import load_source, prepare
from transferlab.data.builtins import load_builtin
from transferlab.fitting import fit
from transferlab.run_backbone import open_backbone

TINY = "test_efficientnet"
TINY_SIZE = 32
LITE = "tf_efficientnet_lite0"
LITE_SIZE = 64


@dataclass
class Cell:
    name: str
    backbone: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    per_class: int
    image_size: int
    seeds: list[int]
    time_limit: float | None = None
    results: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    advice: dict = field(default_factory=dict)


def fashion(classes: range) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    data = load_builtin("fashion-mnist")
    out = []
    for split in ("train", "test"):
        part = data.splits[split]
        keep = np.isin(part.labels, list(classes))
        out.append((part.arrays[keep], part.labels[keep] - classes.start))
    return out[0], out[1]


def same_task() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Source 1's own classes on images it never saw: the test file's, split in half, stratified."""
    images, labels = fashion(range(0, 5))[1]
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.5, stratify=labels, random_state=0)
    return (x_train, y_train), (x_test, y_test)


def digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    bunch = load_digits()
    images = (bunch.images * (255 / 16)).round().astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0
    )
    return (x_train, y_train), (x_test, y_test)


def pretrain_source(out: Path, epochs: int) -> Path:
    """transferlab's own source model: scratch on Fashion-MNIST classes 0-4, every training image."""
    train, test = fashion(range(0, 5))
    config = FitConfig(backbone=TINY, strategy="scratch", image_size=TINY_SIZE, epochs=epochs, augment="light")
    start = time.monotonic()
    fit(train, config, out, quiet=True)
    accuracy = load(out).evaluate(test, split="all")["accuracy"]
    print(
        f"source: {TINY} scratch on Fashion-MNIST 0-4 ({len(train[1])} images): "
        f"test accuracy {accuracy:.4f} in {time.monotonic() - start:.0f} s",
        flush=True,
    )
    return out


def run_cell(cell: Cell, work: Path) -> None:
    base = FitConfig(
        backbone=cell.backbone,
        image_size=cell.image_size,
        per_class=cell.per_class,
        time_limit=cell.time_limit,
        ensemble=1,  # strategies judged as single models, whatever members the time limit would hold
    )
    data = prepare(load_source(cell.train, per_class=cell.per_class, seed=cell.seeds[0]), cell.image_size)
    advice = advise(open_backbone(cell.backbone), data, seed=cell.seeds[0], device=resolve_device("auto"))
    cell.advice = {
        "strategy": advice.strategy,
        "situation": advice.situation,
        "backbone_lr_ratio": advice.backbone_lr_ratio,
        "seconds": advice.evidence.seconds,
    }
    e = advice.evidence
    print(
        f"  {cell.name}: advisor {advice.situation} -> {advice.strategy} (gain {100 * e.transfer_gain:+.1f}, "
        f"peak {e.peak_stage}/{len(e.stage_names)}, probe {[round(100 * a) for a in e.stage_probe]})",
        flush=True,
    )
    stages = len(advice.evidence.stage_names)
    # partial at the advisor's depth (or the middle when it chose otherwise) and at one clearly different depth
    depth = advice.freeze_stages if advice.strategy.startswith("partial") else stages // 2
    other = 1 if depth > 2 else stages - 2
    for strategy in dict.fromkeys(["head", f"partial:{depth}", f"partial:{other}", "full", "scratch"]):
        for seed in cell.seeds:
            start = time.monotonic()
            run = work / f"{cell.name}-{strategy.replace(':', '')}-{seed}"
            settings = base.updated(strategy=strategy, seed=seed, augment=advice.augment)
            if strategy == advice.strategy:  # the advisor's pick runs as the advisor set it up
                settings = settings.updated(backbone_lr_ratio=advice.backbone_lr_ratio)
            fit(cell.train, settings, run, quiet=True)
            accuracy = load(run).evaluate(cell.test, split="all")["accuracy"]
            cell.results.setdefault(strategy, []).append(accuracy)
            cell.seconds[strategy] = cell.seconds.get(strategy, 0) + (time.monotonic() - start) / len(cell.seeds)
        print(f"  {cell.name:<34} {strategy:<11} {100 * statistics.mean(cell.results[strategy]):5.1f}", flush=True)


def report(cells: list[Cell]) -> list[dict]:
    print(f"\n{'cell':<34} {'strategy':<11} {'acc %':>6} {'± sd':>5} {'s/run':>6}")
    rows = []
    for cell in cells:
        means = {s: 100 * statistics.mean(v) for s, v in cell.results.items()}
        best = max(means, key=means.__getitem__)
        for strategy, values in cell.results.items():
            spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
            pick = f" <- advisor (backbone lr x{cell.advice['backbone_lr_ratio']:g})"
            marks = (pick if strategy == cell.advice["strategy"] else "") + (" (best)" if strategy == best else "")
            seconds = cell.seconds[strategy]
            print(f"{cell.name:<34} {strategy:<11} {means[strategy]:6.1f} {spread:5.1f} {seconds:6.0f}{marks}")
        pick = cell.advice["strategy"]
        gap = means[best] - means[pick]
        cost = cell.advice["seconds"] / max(1e-9, cell.seconds["full"])
        print(
            f"{'':<34} advisor: {cell.advice['situation']} -> {pick}, {gap:.1f} points from the best, "
            f"{'not ' if means[pick] < means['head'] else ''}at least head; cost {cell.advice['seconds']:.1f} s "
            f"= {100 * cost:.0f}% of a full fine-tune\n"
        )
        rows.append(
            {
                "cell": cell.name,
                "accuracy": means,
                "advisor": cell.advice,
                "gap_to_best": gap,
                "advisor_cost_ratio": cost,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--source-epochs", type=int, default=4)
    parser.add_argument("--lite-time-limit", type=float, default=150, help="seconds per Lite0 fit")
    parser.add_argument("--quick", action="store_true", help="source 1 only, one seed")
    parser.add_argument("--out", type=Path, default=Path("runs/situations.json"))
    parser.add_argument("--cells", default="", help="run only the cells whose name matches this regex")
    args = parser.parse_args()
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="situations-"))
    seeds = list(range(1 if args.quick else args.seeds))
    source = str(pretrain_source(work / "source", args.source_epochs))
    similar_train, similar_test = fashion(range(5, 10))
    digits_train, digits_test = digits()
    same_train, same_test = same_task()
    cells = [
        Cell("similar small (FMNIST 5-9, 10/cl)", source, similar_train, similar_test, 10, TINY_SIZE, seeds),
        Cell("similar large (FMNIST 5-9, 500/cl)", source, similar_train, similar_test, 500, TINY_SIZE, seeds),
        Cell("same task large (FMNIST 0-4, 500/cl)", source, same_train, same_test, 500, TINY_SIZE, seeds),
        Cell("dissimilar small (digits, 10/cl)", source, digits_train, digits_test, 10, TINY_SIZE, seeds),
        Cell("dissimilar large (digits, all)", source, digits_train, digits_test, 1000, TINY_SIZE, seeds),
    ]
    if not args.quick:
        fm_train, fm_test = fashion(range(10))
        test = (fm_test[0][:2000], fm_test[1][:2000])
        for per_class in (10, 500):
            cells.append(
                Cell(
                    f"ImageNet->FMNIST {per_class}/cl (Lite0)",
                    LITE,
                    fm_train,
                    test,
                    per_class,
                    LITE_SIZE,
                    [0],
                    time_limit=args.lite_time_limit,
                )
            )
    cells = [cell for cell in cells if re.search(args.cells, cell.name)]
    for cell in cells:
        run_cell(cell, work)
    rows = report(cells)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"whole benchmark: {(time.monotonic() - start) / 60:.1f} minutes; table saved to {args.out}")


if __name__ == "__main__":
    main()
