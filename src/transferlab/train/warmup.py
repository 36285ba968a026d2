"""Linear probe, then fine-tune (LP-FT): before the backbone trains, fit the new head on frozen features.

A randomly initialised head sends large, noisy gradients into the pretrained layers during the first epochs
and distorts the very features that made transfer worth it (Kumar et al., 2022, "Fine-Tuning can Distort
Pretrained Features"). Fitting the head first on cached features costs one backbone pass over the training
images and gives the fine-tune a head that already agrees with the features.
"""

from __future__ import annotations

from typing import Any

from transferlab.config import FitConfig
from transferlab.defaults import BASE_LR, default_epochs
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer, validate


def warm_start_head(model: TransferModel, config: FitConfig, data: Any, device: str, run_dir: Any) -> float:
    """Train only the head on clean cached features; returns its validation accuracy."""
    strategy = parse_strategy("head")
    steps_per_epoch = max(1, len(data.splits["train"].labels) // (config.batch_size or 1))
    head_config = config.updated(
        strategy="head",
        augment="none",
        epochs=default_epochs(head_only=True, steps_per_epoch=steps_per_epoch),
        lr=BASE_LR[config.optimizer],
        time_limit=None,
        ema_epochs=0,  # the head is trained in place, with no checkpoint: an average would go unused
    )
    train, val, _ = make_batches(model, strategy, head_config, data, device)
    Trainer(model, strategy, head_config, train, val, run_dir).fit()
    return validate(model, val)["val_accuracy"]
