"""`make demo`: the built-in sample, what the pretrained network sees, then a real fit with the defaults."""

from __future__ import annotations

import time
from pathlib import Path

from transferlab.config import FitConfig

DEMO_SOURCE = "fashion-mnist-sample"
# 100 labelled images per class (of the sample's 200) keeps the whole demo under five minutes on two cores.
DEMO_PER_CLASS = 100


def show_pretrained_predictions() -> None:
    """Top-5 ImageNet classes of the pretrained EfficientNet-Lite0 on scikit-image's sample photos."""
    try:
        from skimage import data as pictures
    except ImportError:
        print("(scikit-image is not installed: skipping the pretrained predictions)")
        return
    from transferlab.backbones import create_backbone
    from transferlab.backbones.imagenet import top_k_source_predictions

    backbone = create_backbone("tf_efficientnet_lite0")
    print(f"\npretrained tf_efficientnet_lite0, weights from {backbone.weights_source}:")
    for name in ("chelsea", "coffee", "astronaut"):
        top = top_k_source_predictions(backbone, [getattr(pictures, name)()], k=5)[0]
        print(f"  {name:<10} " + ", ".join(f"{label} {prob:.2f}" for _, label, prob in top))


def run_demo(out: Path) -> None:
    from transferlab.data import format_summary, load_source, prepare, summarize
    from transferlab.fitting import fit

    dataset = load_source(DEMO_SOURCE)
    print(format_summary(summarize(prepare(dataset, 28), dataset.name)))
    show_pretrained_predictions()
    print(f"\nfitting tf_efficientnet_lite0 on {DEMO_SOURCE} ({DEMO_PER_CLASS} per class), --strategy auto...")
    start = time.monotonic()
    result = fit(DEMO_SOURCE, FitConfig(per_class=DEMO_PER_CLASS), out)
    accuracy = result.scores["accuracy"]
    print(f"\ndemo done in {time.monotonic() - start:.0f} s: test accuracy {accuracy:.4f}; run dir {out}")
    print(f"next: transferlab evaluate {out} {DEMO_SOURCE}   |   transferlab predict {out} IMAGE...")
