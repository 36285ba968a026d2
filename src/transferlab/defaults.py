"""Settings left unset (`None`/`auto`) are chosen here, from the data and the strategy, and recorded.

Each choice is a measured trade-off; `benchmarks/` holds the measurements behind the numbers below.
"""

from __future__ import annotations

import os

from transferlab.config import FitConfig
from transferlab.strategies import Strategy

# Below this many training images per class, the set is "small": augment harder.
STRONG_AUGMENT_BELOW = 50
HEAD_EPOCHS = 30  # a linear head on cached features: epochs cost almost nothing
# Trained stages: past 20 epochs the gain on a small set is within the seeds' spread, and the time is not
# (benchmarks/README.md, "Measurements behind the defaults").
TRAIN_EPOCHS = 20
# Tiny sets give one or two batches per epoch; a fixed epoch count would leave them nearly untrained. These
# floors on optimizer steps raise the epoch count (up to MAX_EPOCHS) where an epoch is that short.
MIN_STEPS = {"head": 300, "train": 150}
MAX_EPOCHS = 200
BATCH_SIZE = 32
MIN_BATCH_SIZE = 8
BASE_LR = {"adamw": 1e-3, "sgd": 1e-2}
# Augmented views cached per image. A linear head with light augmentation gains nothing from more than one;
# strong augmentation (small sets, where views are cheap) and trained stages after a cached prefix want more
# variety: one view of a strongly augmented small set cost a head many points (benchmarks/README.md).
CACHED_VIEWS = {"head": 1, "more": 4}


# The test-time flip's second pass doubles the cost of every prediction (8-10 s per 10,000 test images at 96 px
# here) for +0.05 points on average at a 25 s time limit and +0.2 at longer ones (paired, 14 models); 10 s more
# training bought +0.2 to +0.5 (benchmarks/README.md, "Time to accuracy", the third rerun). Unset, it is on only
# without a time limit.
def default_test_time_flip(time_limit: float | None) -> bool:
    return time_limit is None


# A moving average of the weights over two epochs is what is validated and kept: without it a 15-epoch run lost
# over a point (benchmarks/README.md). Under a time limit the schedule anneals to zero at the end of a few
# epochs, and the average, spanning most of them, lags: on 9 time-limited runs (limits 15-75 s), the last
# epoch's raw weights scored +0.15 points above their average (paired; 8 above, 1 even, none below).
EMA_EPOCHS = 2.0


def default_ema_epochs(time_limit: float | None) -> float:
    return EMA_EPOCHS if time_limit is None else 0.0


# Under a time limit the member count is automatic (`ensemble` unset). The first member trains with the whole
# limit; if its schedule ends early, the time it leaves goes to further members, as many as get at least half
# the first's time each, and at most four in all. On Fashion-MNIST at 100 per class, `--time-limit 480` gave
# four members (the first trained 82-137 s, the others 109-133 s each) and scored 88.29% over 3 seeds, +0.44
# points over one model without a limit, up on every draw (benchmarks/README.md, "Members sharing one draw").
# Four, not more: each member costs a prediction (four scored 2.6x slower than one). Where the first member
# uses most of the limit, the fit is one model, as before.
MAX_MEMBERS = 4


def members_within(time_limit: float, first_seconds: float) -> int:
    """How many members a `time_limit` holds, the first having trained in `first_seconds`."""
    left = time_limit - first_seconds
    if first_seconds <= 0 or left <= 0:
        return 1
    return 1 + min(MAX_MEMBERS - 1, int(left // (first_seconds / 2)))


def fits_an_ensemble(config: FitConfig) -> bool:
    """Whether `fit` goes through ensemble.fit_ensemble: an ensemble asked for, or the automatic count of a
    single-task fit under a time limit in one process (torchrun shares one model's steps out instead)."""
    if config.ensemble is not None:
        return config.ensemble > 1
    single = not (config.refit or config.tasks or config.domains or config.target)
    return config.time_limit is not None and single and int(os.environ.get("WORLD_SIZE", "1")) == 1


def default_epochs(head_only: bool, steps_per_epoch: int) -> int:
    floor = -(-MIN_STEPS["head" if head_only else "train"] // steps_per_epoch)
    return min(MAX_EPOCHS, max(HEAD_EPOCHS if head_only else TRAIN_EPOCHS, floor))


def resolve(config: FitConfig, strategy: Strategy, per_class: int, train_count: int) -> FitConfig:
    """`config` with every automatic setting (but the image size, chosen before) replaced by its value.

    `per_class` is the smallest number of training images in any class, `train_count` the number in all.
    """
    head_only = strategy.frozen_stages is None
    augment = config.augment
    if augment == "auto":
        augment = "strong" if per_class < STRONG_AUGMENT_BELOW else "light"
    views = CACHED_VIEWS["head" if head_only and augment == "light" else "more"]
    # At least four batches per epoch: a 40-image set trains on batches of 10, not one batch of 32.
    batch_size = config.batch_size or min(BATCH_SIZE, max(MIN_BATCH_SIZE, train_count // 4))
    epochs = config.epochs or default_epochs(head_only, max(1, train_count // batch_size))
    flip = default_test_time_flip(config.time_limit) if config.test_time_flip is None else config.test_time_flip
    ema = default_ema_epochs(config.time_limit) if config.ema_epochs is None else config.ema_epochs
    return config.updated(
        strategy=strategy.name,
        epochs=epochs,
        batch_size=batch_size,
        # patience in epochs, but never fewer than a fifth of the run: short epochs are noisy
        patience=config.patience or max(5, epochs // 5),
        lr=config.lr or BASE_LR[config.optimizer],
        backbone_lr_ratio=config.backbone_lr_ratio or strategy.backbone_lr_ratio,
        cached_views=views if config.cached_views is None else config.cached_views,
        augment=augment,
        test_time_flip=flip,
        ema_epochs=ema,
    )
