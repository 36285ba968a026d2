"""transferlab's default `fit` against fastai's `vision_learner` + `fine_tune`, side by side in one process: the
same 1,000 Fashion-MNIST training images (100 per class, written as PNG files), the same ImageNet
EfficientNet-Lite0 weights (loaded into fastai's timm body), the same 10,000 test images. Each side's wall time
runs from reading the files to scoring the test images.

fastai runs with its documented defaults (`ImageDataLoaders.from_folder`, `valid_pct=0.2`, `aug_transforms()`,
`vision_learner`, `fine_tune`) at the size and epochs given (its docs fine-tune for a few epochs; of 64 and
96 px, 96 was its better working size here). transferlab runs its default `fit`, and again with each
`--time-limits` (seconds of training: the user's one knob), to find the front against the goal: ≥ 8 points
above fastai in ≤ 1/3 of its time.

    pip install 'transferlab[bench]'
    python benchmarks/peers.py [--size 96] [--sizes 64,96] [--epochs 8] [--seed 0] [--time-limits 15,25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
from PIL import Image

from transferlab.backbones.weights import load_weights
from transferlab.config import FitConfig
from transferlab.data import load_source
from transferlab.fitting import fit


def write_pngs(root: Path, seed: int) -> Path:
    """root/train/<class>/*.png (100 per class, drawn by seed) and root/test/<class>/*.png (all 10,000)."""
    data = load_source("fashion-mnist", per_class=100, seed=seed, val_fraction=0)
    for split in ("train", "test"):
        part = data.splits[split]
        assert part.arrays is not None
        for i, (image, label) in enumerate(zip(part.arrays, part.labels, strict=True)):
            folder = root / split / data.classes[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def run_fastai(root: Path, size: int, epochs: int, seed: int) -> tuple[float, float]:
    """(test accuracy, seconds) of fastai's default transfer recipe on the same files and weights."""
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        accuracy,
        aug_transforms,
        get_image_files,
        set_seed,
        vision_learner,
    )

    start = time.monotonic()
    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(
        root / "train", valid_pct=0.2, seed=seed, item_tfms=Resize(size), batch_tfms=aug_transforms(), num_workers=0
    )
    learn = vision_learner(dls, "tf_efficientnet_lite0", metrics=accuracy, pretrained=False)
    pretrained = timm.create_model("tf_efficientnet_lite0")
    load_weights(pretrained, "tf_efficientnet_lite0", classifier="classifier")  # the pip-packaged ImageNet weights
    body = learn.model[0].model  # fastai's TimmBody around the timm model, its classifier removed
    missing, _ = body.load_state_dict(pretrained.state_dict(), strict=False)
    assert not missing, f"weights that did not reach fastai's body: {missing[:3]}"
    with learn.no_bar():
        learn.fine_tune(epochs)
        test_files = get_image_files(root / "test")
        probs, _ = learn.get_preds(dl=dls.test_dl(test_files))
    predicted = [dls.vocab[i] for i in probs.argmax(1).tolist()]
    truth = [path.parent.name for path in test_files]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])), time.monotonic() - start


GOAL_POINTS, GOAL_SHARE = 0.08, 1 / 3  # ≥ 8 points above fastai in ≤ 1/3 of its time


def run_transferlab(root: Path, seed: int, out: Path, time_limit: float | None = None) -> tuple[float, float]:
    start = time.monotonic()
    result = fit(str(root), FitConfig(seed=seed, report=False, time_limit=time_limit), out, quiet=True)
    return result.scores["accuracy"], time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", help="fastai's working sizes to try, e.g. 64,96 (default: --size only)")
    parser.add_argument("--time-limits", default="15,25", help="comma-separated --time-limit values for more rows")
    args = parser.parse_args()
    root = write_pngs(Path(tempfile.mkdtemp(prefix="peers-")), args.seed)
    ours, our_seconds = run_transferlab(root, args.seed, root.parent / f"{root.name}-run")
    limited = {
        float(limit): run_transferlab(root, args.seed, root.parent / f"{root.name}-run-{limit}", float(limit))
        for limit in args.time_limits.split(",")
        if limit
    }
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.size]
    runs = {size: run_fastai(root, size, args.epochs, args.seed) for size in sizes}
    for size, (accuracy, seconds) in runs.items():
        print(f"  fastai at {size} px: {100 * accuracy:.1f}% in {seconds:.0f} s")
    args.size = max(runs, key=lambda size: runs[size][0])  # fastai at its best working size
    theirs, their_seconds = runs[args.size]
    print(f"\nFashion-MNIST, 100 labelled images per class, ImageNet Lite0, 10,000 test images, seed {args.seed}")
    print(f"{'':<44} {'accuracy':>9} {'seconds':>8}")
    print(f"{'transferlab fit (defaults: auto)':<44} {100 * ours:>8.1f}% {our_seconds:>8.0f}")
    for limit, (accuracy, seconds) in limited.items():
        print(f"{f'transferlab fit --time-limit {limit:g}':<44} {100 * accuracy:>8.1f}% {seconds:>8.0f}")
    label = f"fastai vision_learner + fine_tune({args.epochs}), {args.size} px"
    print(f"{label:<44} {100 * theirs:>8.1f}% {their_seconds:>8.0f}")
    print(f"transferlab: {100 * (ours - theirs):+.1f} points in {our_seconds / their_seconds:.2f}x fastai's time")
    budget = GOAL_SHARE * their_seconds
    fast = [(accuracy, seconds) for accuracy, seconds in [(ours, our_seconds), *limited.values()] if seconds <= budget]
    best = max(fast, default=None)
    verdict = "PASS" if best and best[0] - theirs >= GOAL_POINTS else "MISS"
    found = f"{100 * (best[0] - theirs):+.1f} points in {best[1]:.0f} s" if best else "no transferlab row was as fast"
    print(f"{verdict} ≥ {100 * GOAL_POINTS:.0f} points above fastai in ≤ 1/3 of its time ({budget:.0f} s): {found}")


if __name__ == "__main__":
    main()
