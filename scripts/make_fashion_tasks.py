"""Write a two-task CSV manifest of Fashion-MNIST PNG files: the example of multi-task learning.

- `item`: the 10 classes, labelled on only `--labelled` training images per class (empty elsewhere);
- `category`: 4 coarse classes (tops; bottoms and dresses; footwear; bags), labelled on every image.

    python scripts/make_fashion_tasks.py OUT [--source fashion-mnist-sample] [--per-class 200] [--labelled 20]

It writes OUT/train/*.png, OUT/test/*.png and OUT/labels.csv (path,item,category,split); every test image
has both labels. The default source ships with transferlab; `--source fashion-mnist` reads the full set.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data import load_source
from transferlab.data.builtins import FASHION_CLASSES

CATEGORY = {
    "tops": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
    "bottoms and dresses": ["Trouser", "Dress"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bags": ["Bag"],
}
COARSE = {item: coarse for coarse, items in CATEGORY.items() for item in items}


def write_manifest(out: Path, source: str, per_class: int, labelled: int, seed: int) -> Path:
    data = load_source(source, per_class=per_class, seed=seed, val_fraction=0)
    train, test = data.splits["train"], data.splits["test"]
    rng = np.random.default_rng(seed)
    has_item = np.zeros(len(train), dtype=bool)
    for c in range(len(FASHION_CLASSES)):
        has_item[rng.permutation(np.flatnonzero(train.labels == c))[:labelled]] = True
    rows = []
    for split, part, labels_item in (("train", train, has_item), ("test", test, np.ones(len(test), dtype=bool))):
        assert part.arrays is not None
        (out / split).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(part.arrays, part.labels, strict=True)):
            Image.fromarray(image).save(out / split / f"{i}.png")
            item = FASHION_CLASSES[label]
            kept = item if labels_item[i] else ""
            rows.append({"path": f"{split}/{i}.png", "item": kept, "category": COARSE[item], "split": split})
    with (out / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "item", "category", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return out / "labels.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", default="fashion-mnist-sample")
    parser.add_argument("--per-class", type=int, default=200, help="training images per class")
    parser.add_argument("--labelled", type=int, default=20, help="of them, how many have an `item` label")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_manifest(args.out, args.source, args.per_class, args.labelled, args.seed))


if __name__ == "__main__":
    main()
