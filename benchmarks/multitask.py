"""Multi-task and multi-domain learning on real data, one table each, every row a whole `fit` (decoding, the
heads' warm start, training, and scoring every test image), timed side by side in one process.

Multi-task: Fashion-MNIST, 200 training images per class drawn by seed, with two tasks on the same images:
- `item`, the 10 classes, labelled on only 20 images per class (the other 180 have no `item` label);
- `category`, 4 coarse classes (tops; bottoms and dresses; footwear; bags), labelled on every image.
Rows: each task alone, hard sharing with equal, uncertainty and gradnorm weighting, soft sharing at three λ. All are
scored on the 10,000 test images. Δm is LibMTL's measure: the mean over tasks of the relative accuracy gain
over the single-task model, in percent.

Multi-domain: Fashion-MNIST (100/class), scikit-learn's digits (50/class) and scikit-image's lfw_subset
(faces against non-faces, 25 px) in one network with a head per domain, against a model per domain.

    python benchmarks/multitask.py [--part tasks|domains|all] [--strategy partial:4] [--image-size 64]
        [--weightings equal,uncertainty,gradnorm] [--lambdas 0.001,0.01,0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferlab.config import FitConfig
from transferlab.data import load_source
from transferlab.fitting import fit

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _save(folder: Path, name: str, image: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)


def fashion_tasks_manifest(root: Path, per_class: int, labelled: int, seed: int) -> Path:
    """The README's example manifest (scripts/make_fashion_tasks.py), from the full Fashion-MNIST."""
    command = [sys.executable, str(SCRIPTS / "make_fashion_tasks.py"), str(root), "--source", "fashion-mnist"]
    options = ["--per-class", str(per_class), "--labelled", str(labelled), "--seed", str(seed)]
    subprocess.run([*command, *options], check=True, stdout=subprocess.DEVNULL)
    return root / "labels.csv"


def image_folder(root: Path, images: np.ndarray, labels: list[str], test: np.ndarray) -> Path:
    """root/{train,test}/<class>/<i>.png; `test` marks the test images."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        _save(root / ("test" if test[i] else "train") / label, f"{i}.png", image)
    return root


def domain_folders(root: Path, seed: int) -> dict[str, Path]:
    """Fashion-MNIST 100/class (its 10,000 test images), digits 50/class (their shipped test quarter) and
    lfw_subset (a stratified quarter held out for test), as image folders."""
    from skimage.data import lfw_subset

    rng = np.random.default_rng(seed)
    fashion = load_source("fashion-mnist", per_class=100, seed=seed, val_fraction=0)
    digits = load_source("digits", per_class=50, seed=seed, val_fraction=0)
    folders = {}
    for name, data in (("fashion", fashion), ("digits", digits)):
        train, test = data.splits["train"], data.splits["test"]
        assert train.arrays is not None and test.arrays is not None
        images = np.concatenate([train.arrays, test.arrays])
        labels = [data.classes[c] for c in np.concatenate([train.labels, test.labels])]
        marks = np.arange(len(images)) >= len(train)
        folders[name] = image_folder(root / name, images, labels, marks)
    faces = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces, 25×25 grey
    kinds = ["face"] * 100 + ["non-face"] * 100
    held = np.zeros(200, dtype=bool)
    for start in (0, 100):
        held[start + rng.permutation(100)[:25]] = True
    folders["faces"] = image_folder(root / "faces", faces, kinds, held)
    return folders


def run_row(name: str, source: Any, config: FitConfig, out: Path) -> dict[str, Any]:
    start = time.monotonic()
    result = fit(source, config, out / re.sub(r"[^\w.]+", "-", name), quiet=True)
    seconds = time.monotonic() - start
    scores = result.scores.get("tasks", {next(iter(result.heads)): result.scores})
    row = {"row": name, "seconds": seconds, "train_seconds": result.state.elapsed, "epochs": result.state.epoch}
    accuracies = ", ".join(f"{task} {each['accuracy']:.4f}" for task, each in scores.items())
    print(f"  {name}: {accuracies}  {seconds:.0f} s", flush=True)
    return row | {"accuracy": {task: each["accuracy"] for task, each in scores.items()}}


def delta_m(row: dict[str, Any], single: dict[str, float]) -> float:
    """LibMTL's Δm: mean over tasks of (accuracy − single-task accuracy) / single-task accuracy, in %."""
    gains = [(row["accuracy"][task] - base) / base for task, base in single.items()]
    return 100 * sum(gains) / len(gains)


def tasks_table(args: argparse.Namespace, base: FitConfig, out: Path) -> None:
    manifest = fashion_tasks_manifest(out / "fashion-tasks", 200, 20, args.seed)
    print(f"multi-task data: {manifest}", flush=True)
    both = "item,category"
    rows = [
        run_row("item alone", str(manifest), base.updated(tasks="item"), out),
        run_row("category alone", str(manifest), base.updated(tasks="category"), out),
    ]
    for weighting in args.weightings.split(","):
        rows.append(run_row(f"hard, {weighting}", str(manifest), base.updated(tasks=both, weighting=weighting), out))
    for weight in filter(None, args.lambdas.split(",")):
        config = base.updated(tasks=both, sharing="soft", soft_l2=float(weight))
        rows.append(run_row(f"soft, λ={weight}", str(manifest), config, out))
    single = {"item": rows[0]["accuracy"]["item"], "category": rows[1]["accuracy"]["category"]}
    alone = rows[0]["seconds"] + rows[1]["seconds"]
    print(
        f"\nFashion-MNIST, 200 images/class ({'item'} labelled on 20/class), {base.strategy}, {base.image_size} px, "
        f"{base.epochs or 'default'} epochs, 10,000 test images, seed {args.seed}"
    )
    print(f"{'row':<20} {'item':>7} {'category':>9} {'Δm %':>7} {'seconds':>8} {'vs both alone':>14}")
    for row in rows:
        acc = row["accuracy"]
        item = f"{100 * acc['item']:.1f}" if "item" in acc else "-"
        category = f"{100 * acc['category']:.1f}" if "category" in acc else "-"
        dm = f"{delta_m(row, single):+.2f}" if len(acc) == 2 else "-"
        ratio = f"{row['seconds'] / alone:.2f}x" if len(acc) == 2 else "-"
        print(f"{row['row']:<20} {item:>7} {category:>9} {dm:>7} {row['seconds']:>8.0f} {ratio:>14}")


def domains_table(args: argparse.Namespace, base: FitConfig, out: Path) -> None:
    folders = domain_folders(out / "domains", args.seed)
    rows = [run_row(f"{name} alone", str(folder), base, out) for name, folder in folders.items()]
    sources = {name: str(folder) for name, folder in folders.items()}
    rows.append(run_row("one network, shared", sources, base, out))
    rows.append(run_row("one network, BN per domain", sources, base.updated(domain_batchnorm=True), out))
    separate = {name: row["accuracy"][next(iter(row["accuracy"]))] for name, row in zip(folders, rows, strict=False)}
    print(f"\nmulti-domain: {', '.join(folders)}; {base.strategy}, {base.image_size} px, seed {args.seed}")
    print(f"{'row':<28} {' '.join(f'{n:>8}' for n in folders)} {'mean':>7} {'seconds':>8} {'backbones':>9}")
    mean_alone = sum(separate.values()) / len(separate)
    seconds_alone = sum(row["seconds"] for row in rows[: len(folders)])
    print(
        f"{'separate models':<28} {' '.join(f'{100 * a:>8.1f}' for a in separate.values())} "
        f"{100 * mean_alone:>7.1f} {seconds_alone:>8.0f} {len(folders):>9}"
    )
    for row in rows[len(folders) :]:
        accs = [row["accuracy"][name] for name in folders]
        mean = sum(accs) / len(accs)
        print(
            f"{row['row']:<28} {' '.join(f'{100 * a:>8.1f}' for a in accs)} {100 * mean:>7.1f} "
            f"{row['seconds']:>8.0f} {1:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["tasks", "domains", "all"], default="all")
    parser.add_argument("--strategy", default="partial:4")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--weightings", default="equal,uncertainty,gradnorm", help="hard-sharing rows")
    parser.add_argument("--lambdas", default="0.001,0.01,0.1", help="soft-sharing rows ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="multitask-")))
    args = parser.parse_args()
    base = FitConfig(strategy=args.strategy, image_size=args.image_size, epochs=args.epochs, seed=args.seed)
    if args.part in ("tasks", "all"):
        tasks_table(args, base, args.out)
    if args.part in ("domains", "all"):
        domains_table(args, base, args.out)
    print(f"run dirs: {args.out}")


if __name__ == "__main__":
    main()
