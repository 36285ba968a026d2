"""The hidden case: the same Fashion-MNIST images as image files instead of the built-in IDX arrays. Does a
default `fit` score the same, and if not, is it the file format (JPEG artefacts), the size the files were
saved at, the train/validation split, or the advisor deciding differently?

The draw is the built-in's own (--per-class images per class, seed 0: its train, val and test splits, all
10,000 test images). Rows, each a default `fit` (strategy auto) in one process:
- `arrays`: the built-in, as the benchmarks use it;
- `png 28, same split`: the same images as 28 px PNG files in train/, val/ and test/ folders;
- `png 56, same split`: upsampled to 56 px (bicubic, as a user's export might) before saving;
- `jpeg 56, same split`: the same 56 px images as JPEG (quality 75, PIL's default);
- `png 56, own split`: train and val pooled in train/, so that the library carves its own validation split.

    python benchmarks/files_vs_arrays.py [--per-class 100] [--rows arrays,png28,png56,jpeg56,png56-own]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.config import FitConfig
from transferlab.data import load_source
from transferlab.fitting import fit

ROWS = {
    "arrays": "arrays (the built-in)",
    "png28": "png 28, same split",
    "png56": "png 56, same split",
    "jpeg56": "jpeg 56, same split",
    "png56-own": "png 56, own split",
}


def write(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], size: int, fmt: str):
    """root/<split>/<class>/<i>.<fmt>, each image resized to `size` (bicubic) when it is not that size."""
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(image)
            if picture.size != (size, size):
                picture = picture.resize((size, size), Image.Resampling.BICUBIC)
            picture.save(folder / f"{i:05d}.{fmt}", **({"quality": 75} if fmt == "jpg" else {}))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--rows", default=",".join(ROWS))
    args = parser.parse_args()
    dataset = load_source("fashion-mnist", per_class=args.per_class, seed=0)
    classes = [name.replace("/", "-") for name in dataset.classes]
    arrays = {}
    for name, split in dataset.splits.items():
        assert split.arrays is not None, "the built-in is in memory"
        arrays[name] = (split.arrays, np.asarray(split.labels))
    pooled = {
        "train": tuple(np.concatenate([arrays["train"][k], arrays["val"][k]]) for k in (0, 1)),
        "test": arrays["test"],
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="files-vs-arrays-") as temp:
        root = Path(temp)
        for row in args.rows.split(","):
            source: str = "fashion-mnist"
            config = FitConfig(per_class=args.per_class, report=False)
            if row != "arrays":
                size = 28 if row == "png28" else 56
                splits = pooled if row.endswith("own") else arrays
                source = str(write(root / row, splits, classes, size, "jpg" if row.startswith("jpeg") else "png"))
                config = FitConfig(report=False)  # the folder holds the draw already
            started = time.monotonic()
            result = fit(source, config, root / f"run-{row}", quiet=True)
            seconds = time.monotonic() - started
            advice = json.loads((root / f"run-{row}" / "advice.json").read_text())
            pick = f"{result.strategy.name} x{result.strategy.backbone_lr_ratio:g} ({advice['situation']})"
            results.append((ROWS[row], result.scores["accuracy"], pick, result.config.image_size, seconds))
            print(f"  {ROWS[row]}: {100 * result.scores['accuracy']:.1f}%, {pick}, {seconds:.0f} s", flush=True)
    print(f"\nFashion-MNIST {args.per_class}/class (seed 0), default fit, 10,000 test images")
    print(f"{'input':<24} {'test acc':>9}  {'px':>4} {'seconds':>8}  advisor's pick")
    for name, accuracy, pick, size, seconds in results:
        print(f"{name:<24} {100 * accuracy:>8.1f}%  {size:>4} {seconds:>8.0f}  {pick}")


if __name__ == "__main__":
    main()
