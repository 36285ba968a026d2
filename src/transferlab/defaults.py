"""Settings left unset (`None`/`auto`) are chosen here, from the data and the strategy, and recorded.

Each choice is a measured trade-off; `benchmarks/` holds the measurements behind the numbers below.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.config import FitConfig
from transferlab.strategies import Strategy

# Images much smaller than the backbone's native input (28 px Fashion-MNIST, 8 px digits) are upsampled to
# this working size rather than to 224 px: most of the accuracy for a fraction of the time.
SMALL_IMAGE_SIZE = 96
# Below this many training images per class, the set is "small": augment harder.
STRONG_AUGMENT_BELOW = 50
HEAD_EPOCHS = 30  # a linear head on cached features: epochs cost almost nothing
TRAIN_EPOCHS = 15
BASE_LR = {"adamw": 1e-3, "sgd": 1e-2}


@dataclass(frozen=True)
class DataFacts:
    """What the defaults need to know about the data, measured before decoding."""

    per_class: int  # smallest number of training images in any class
    native_size: int  # median shorter side of the original images, in pixels


def working_size(native: int, backbone_size: int) -> int:
    """The backbone's own input size for photos; a smaller working size for small images."""
    return backbone_size if native >= backbone_size * 0.75 else min(backbone_size, max(SMALL_IMAGE_SIZE, native))


def resolve(config: FitConfig, strategy: Strategy, facts: DataFacts, backbone_size: int) -> FitConfig:
    """`config` with every automatic setting replaced by its chosen value."""
    head_only = strategy.frozen_stages is None
    augment = config.augment
    if augment == "auto":
        augment = "strong" if facts.per_class < STRONG_AUGMENT_BELOW else "light"
    return config.updated(
        strategy=strategy.name,
        image_size=config.image_size or working_size(facts.native_size, backbone_size),
        epochs=config.epochs or (HEAD_EPOCHS if head_only else TRAIN_EPOCHS),
        lr=config.lr or BASE_LR[config.optimizer],
        augment=augment,
    )
