"""Linear probe, then fine-tune (LP-FT): before the backbone trains, fit the new heads on frozen features.

A randomly initialised head sends large, noisy gradients into the pretrained layers during the first epochs
and distorts the very features that made transfer worth it (Kumar et al., 2022, "Fine-Tuning can Distort
Pretrained Features"). Fitting the heads first on cached features costs one backbone pass over the training
images and gives the fine-tune heads that already agree with the features.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config import FitConfig
from transferlab.defaults import BASE_LR, default_epochs
from transferlab.fitdata import FitData
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import CachedBatches
from transferlab.train.features import FinalFeatures
from transferlab.train.inputs import make_fit_batches
from transferlab.train.loop import Trainer, validate
from transferlab.train.objectives import Objective


def warm_start_head(
    model: TransferModel,
    config: FitConfig,
    data: FitData,
    device: str,
    run_dir: Path,
    objective: Objective,
    features: FinalFeatures | None = None,
) -> float:
    """Train only the heads on clean cached features (unaugmented, unmixed), minimising `objective`; returns
    their validation accuracy (the mean over heads). `features`: the pretrained backbone's, already computed
    (by the advisor); read where they cover the data's images, else computed here."""
    strategy = parse_strategy("head")
    if config.batch_size is None:
        raise ValueError("warm_start_head takes a resolved config (defaults.resolve): batch_size must be set")
    steps_per_epoch = max(1, data.train_images // config.batch_size)
    head_config = config.updated(
        strategy="head",
        augment="none",
        mix="none",  # a probe of the clean features, as the augmentation is off
        epochs=default_epochs(head_only=True, steps_per_epoch=steps_per_epoch),
        lr=BASE_LR[config.optimizer],
        time_limit=None,
        ema_epochs=0,  # the heads are trained in place, with no checkpoint: an average would go unused
    )
    batches = _reused(features, data, model.backbone.num_stages, config.batch_size, device)
    train, val = batches or make_fit_batches(model, strategy, head_config, data, device)[:2]
    # Validated once, at the end: no callback would read each epoch's (it was 29 passes over the validation set).
    Trainer(model, strategy, head_config, train, None, run_dir, objective=objective).fit()
    return validate(model, val)["val_accuracy"]


def _reused(
    features: FinalFeatures | None, data: FitData, stages: int, batch_size: int, device: str
) -> tuple[CachedBatches, CachedBatches] | None:
    """(train, val) batches of `features`, as make_fit_batches would cache them for `head` without augmentation
    (one clean view), when they were computed from this one source's own images; else None."""
    if features is None or data.domains:  # several domains: the advisor measured one of them
        return None
    splits = data.sources[""].splits
    train, val = (features.of(name, splits[name].images) for name in ("train", "val"))
    if train is None or val is None:
        return None
    return (
        CachedBatches(train[None], splits["train"].labels, batch_size, stages, shuffle=True, device=device),
        CachedBatches(val[None], splits["val"].labels, batch_size, stages, device=device),
    )
