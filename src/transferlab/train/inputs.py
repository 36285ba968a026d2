"""Training and validation batches for a strategy: from the frozen-prefix cache when it fits in memory,
else from the decoded images, normalised and augmented batch by batch."""

from __future__ import annotations

from transferlab.config import FitConfig
from transferlab.data import DecodedSplit, PreparedData
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.distributed import World
from transferlab.fitdata import FitData
from transferlab.model import TransferModel
from transferlab.strategies import Strategy
from transferlab.train.batches import Batches, CachedBatches, DomainBatches, ImageBatches, PairedBatches
from transferlab.train.features import DEFAULT_BUDGET_BYTES, cache_views, views_that_fit


def make_fit_batches(
    model: TransferModel, strategy: Strategy, config: FitConfig, data: FitData, device: str, world: World | None = None
) -> tuple[Batches, Batches, str]:
    """(train, val, note) for a run: one source's batches, or every domain's, interleaved. `world`: the
    processes that share out the frozen prefix's cache (features.prefix_outputs)."""
    if not data.domains:
        return make_batches(model, strategy, config, data.sources[""], device, world=world)
    made = {
        name: make_batches(model, strategy, config, each, device, world=world) for name, each in data.sources.items()
    }
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
    world: World | None = None,
) -> tuple[Batches, Batches, Batches, str]:
    """Domain adaptation's (train, val, target val, note). `side_by_side`: each source training batch is paired
    with a target batch (methods whose loss reads the target), else the source's batches alone. Validation is
    the source's (the target's labels are never read); the target's held-out images are there to measure how
    far apart the domains' features are, from the images (it reads a few hundred per epoch). `world`: the ranks
    share out the frozen prefix's caches."""
    held_out = target.splits["val"]
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
    assert config.batch_size is not None, "make_batches checks the resolved config"
    target_val = ImageBatches(held_out.images, held_out.labels, normalizer, config.batch_size, device=device)
    if not side_by_side:
        train, val, note = make_batches(model, strategy, config, source, device, world=world)
        return train, val, target_val, note
    budget = DEFAULT_BUDGET_BYTES // 2
    train, val, note = make_batches(model, strategy, config, source, device, budget, world)
    target_train, _ = train_batches(model, strategy, config, target.splits["train"], device, budget, world)
    if target_train.start_stage != train.start_stage:
        # Both halves of a batch must enter the model at the same stage: when the cache cannot hold both, neither.
        train, val, note = make_batches(model, strategy, config, source, device, budget=0)
        target_train, _ = train_batches(model, strategy, config, target.splits["train"], device, budget=0)
    return PairedBatches(train, target_train), val, target_val, f"{note}; a target batch beside each source batch"


def make_batches(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    data: PreparedData,
    device: str,
    budget: int = DEFAULT_BUDGET_BYTES,
    world: World | None = None,
) -> tuple[ImageBatches | CachedBatches, ImageBatches | CachedBatches, str]:
    """(train, val, a note on how the input is fed), for a config whose automatic settings are resolved;
    the frozen prefix is cached when `budget` bytes hold it. Validation enters the model where training does."""
    train, note = train_batches(model, strategy, config, data.splits["train"], device, budget, world)
    val = data.splits["val"]
    assert config.batch_size is not None, "train_batches checks the resolved config"
    if isinstance(train, CachedBatches):
        normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
        frozen = train.start_stage
        clean = PRESETS["none"]
        views = cache_views(model, val.images, frozen, normalizer, clean, 1, config.seed, device=device, world=world)
        return train, CachedBatches(views, val.labels, config.batch_size, frozen, device=device), note
    return train, ImageBatches(val.images, val.labels, train.normalizer, config.batch_size, device=device), note


def train_batches(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    train: DecodedSplit,
    device: str,
    budget: int,
    world: World | None = None,
) -> tuple[ImageBatches | CachedBatches, str]:
    """Shuffled training batches of `train` and a note on how they are fed: from the frozen prefix's cache when
    `budget` bytes hold it, else from the images, normalised and augmented batch by batch."""
    batch, size, augmented = config.batch_size, config.image_size, config.cached_views
    if batch is None or size is None or augmented is None:
        raise ValueError("make_batches needs a resolved config: batch_size, image_size and cached_views set")
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
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
        views = cache_views(
            model, train.images, frozen, normalizer, preset, fits, config.seed, device=device, world=world
        )
        kind = "clean" if not preset.active else f"'{preset.name}' augmentation"
        kind += ", the first clean" if preset.active and preset.caches_clean_view else ""
        note = f"frozen prefix ({frozen} stages) cached once: {fits} view(s) per image ({kind})"
        return CachedBatches(views, train.labels, batch, frozen, shuffle=True, device=device), note
    note = f"images normalised per batch, augmentation '{preset.name}' applied on the fly"
    return ImageBatches(train.images, train.labels, normalizer, batch, preset, shuffle=True, device=device), note
