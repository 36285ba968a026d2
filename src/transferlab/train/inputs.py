"""Training and validation batches for a strategy: from the frozen-prefix cache when it fits in memory,
else from the decoded images, normalised and augmented batch by batch."""

from __future__ import annotations

from transferlab.config import FitConfig
from transferlab.data import PreparedData
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.fitdata import FitData
from transferlab.model import TransferModel
from transferlab.strategies import Strategy
from transferlab.train.batches import Batches, CachedBatches, DomainBatches, ImageBatches, PairedBatches
from transferlab.train.features import DEFAULT_BUDGET_BYTES, cache_views, views_that_fit


def make_fit_batches(
    model: TransferModel, strategy: Strategy, config: FitConfig, data: FitData, device: str
) -> tuple[Batches, Batches, str]:
    """(train, val, note) for a run: one source's batches, or every domain's, interleaved."""
    if not data.domains:
        return make_batches(model, strategy, config, data.sources[""], device)
    made = {name: make_batches(model, strategy, config, each, device) for name, each in data.sources.items()}
    notes = {note for _, _, note in made.values()}
    note = "; ".join(f"{name}: {note}" for name, (_, _, note) in made.items()) if len(notes) > 1 else notes.pop()
    return (
        DomainBatches({name: train for name, (train, _, _) in made.items()}, shuffle=True),
        DomainBatches({name: val for name, (_, val, _) in made.items()}),
        f"{len(made)} domains, a batch from one domain at a time; {note}",
    )


def make_paired_batches(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    source: PreparedData,
    target: PreparedData,
    device: str,
    side_by_side: bool = True,
) -> tuple[Batches, Batches, Batches, str]:
    """Domain adaptation's (train, val, target val, note). `side_by_side`: each source training batch is paired
    with a target batch (methods whose loss reads the target), else the source's batches alone. Validation is
    the source's (the target's labels are never read); the target's held-out images are there to measure how
    far apart the domains' features are."""
    budget = DEFAULT_BUDGET_BYTES // 2
    train, val, note = make_batches(model, strategy, config, source, device, budget)
    target_train, target_val, _ = make_batches(model, strategy, config, target, device, budget)
    if not side_by_side:
        return train, val, target_val, note
    if target_train.start_stage != train.start_stage:
        # Both halves of a batch must enter the model at the same stage: when the cache cannot hold both, neither.
        train, val, note = make_batches(model, strategy, config, source, device, budget=0)
        target_train, target_val, _ = make_batches(model, strategy, config, target, device, budget=0)
    return PairedBatches(train, target_train), val, target_val, f"{note}; a target batch beside each source batch"


def make_batches(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    data: PreparedData,
    device: str,
    budget: int = DEFAULT_BUDGET_BYTES,
) -> tuple[ImageBatches | CachedBatches, ImageBatches | CachedBatches, str]:
    """(train, val, a note on how the input is fed), for a config whose automatic settings are resolved;
    the frozen prefix is cached when `budget` bytes hold it."""
    batch, size, augmented = config.batch_size, config.image_size, config.cached_views
    if batch is None or size is None or augmented is None:
        raise ValueError("make_batches needs a resolved config: batch_size, image_size and cached_views set")
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
    train, val = data.splits["train"], data.splits["val"]
    preset = PRESETS[config.augment]
    frozen = strategy.num_frozen(model)
    if not preset.active:
        wanted = 1  # the clean image
    elif augmented == 0:
        wanted = 0  # no cache: fresh augmentation every epoch (the classic loop)
    else:
        wanted = augmented + preset.caches_clean_view  # and the clean image beside distorting augmentation
    fits = views_that_fit(model, frozen, size, len(train.labels), wanted, budget) if frozen else 0
    if fits:
        views = cache_views(model, train.images, frozen, normalizer, preset, fits, config.seed, device=device)
        clean = PRESETS["none"]
        val_views = cache_views(model, val.images, frozen, normalizer, clean, 1, config.seed, device=device)
        kind = "clean" if not preset.active else f"'{preset.name}' augmentation"
        kind += ", the first clean" if preset.active and preset.caches_clean_view else ""
        note = f"frozen prefix ({frozen} stages) cached once: {fits} view(s) per image ({kind})"
        return (
            CachedBatches(views, train.labels, batch, frozen, shuffle=True, device=device),
            CachedBatches(val_views, val.labels, batch, frozen, device=device),
            note,
        )
    note = f"images normalised per batch, augmentation '{preset.name}' applied on the fly"
    return (
        ImageBatches(train.images, train.labels, normalizer, batch, preset, shuffle=True, device=device),
        ImageBatches(val.images, val.labels, normalizer, batch, device=device),
        note,
    )
