"""Building a run: source → samples → decoded cache → backbone, strategy, model, objective → batches, and the
heads' warm start. What it returns, a `Run`, is everything the one Trainer needs (fitting/training.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from transferlab._atomic import write_json_atomic
from transferlab.adaptation.methods import (
    build_adaptation,
    describe_adaptation,
    prepare_adaptation,
    reads_target,
    source_image_weights,
)
from transferlab.backbones import Backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Dataset, PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.transforms import PRESETS
from transferlab.defaults import EMA_EPOCHS, resolve
from transferlab.distributed import World, join
from transferlab.errors import ConfigError, TransferlabError
from transferlab.fitdata import FitData
from transferlab.model import TransferModel
from transferlab.run_backbone import open_backbone
from transferlab.rundir import RunDir
from transferlab.sizing import image_size_for, prepare_for
from transferlab.strategies import Strategy, parse_strategy
from transferlab.train.batches import Batches, shard
from transferlab.train.features import FinalFeatures
from transferlab.train.inputs import make_fit_batches, make_paired_batches
from transferlab.train.objectives import CrossEntropy, MultiTask, Objective, SoftSharing, Total
from transferlab.train.precision import resolve_precision
from transferlab.train.warmup import warm_start_head

Echo = Callable[[str], None]
# A fit's data: one source, or, for multi-domain learning, {domain: source}.
Sources = Source | Mapping[str, Source]


@dataclass
class Run:
    """Everything one training run is built from, ready for the Trainer."""

    run_dir: Path
    config: FitConfig  # resolved: no automatic setting left
    data: FitData
    model: TransferModel
    strategy: Strategy
    objective: Objective
    train: Batches
    val: Batches
    input_note: str
    device: str
    echo: Echo
    target: PreparedData | None = None  # domain adaptation's target: train and val unlabelled
    target_val: Batches | None = None  # its held-out images, to measure the domains' distance each epoch
    world: World = field(default_factory=World)  # the processes torchrun started (one, without it)

    @property
    def heads(self) -> dict[str, list[str]]:
        return self.data.heads


def _inputs(
    source: Sources | None, target: Source | None, config: FitConfig, run_dir: Path, resume: bool
) -> tuple[Sources, Source | None, FitConfig]:
    """(source, target, config): a resumed run takes its settings (and, unless given, its source and target)
    from its own config.yaml; sources given by name or path are recorded in the config, for --resume."""
    if resume:
        config = FitConfig.load(RunDir(run_dir).config)
        source = source if source is not None else (config.domain_sources or config.source)
    if source is None and config.domain_sources:
        source = config.domain_sources
    if source is None:
        hint = " (this run was fitted on in-memory arrays: pass them again to resume)" if resume else ""
        raise TransferlabError(f"a data source is needed{hint}")
    if isinstance(source, str | Path):
        config = config.updated(source=str(source))
    elif isinstance(source, Mapping) and all(isinstance(each, str | Path) for each in source.values()):
        config = config.updated(domains=[f"{name}={each}" for name, each in source.items()])
    if isinstance(target, str | Path):
        config = config.updated(target=str(target))
    return source, target if target is not None else config.target, config


def _load(sources: Sources, config: FitConfig) -> dict[str, Dataset]:
    """{domain: Dataset}; one source without domains is `{"": Dataset}`."""

    def load(source: Source, tasks: list[str] | None = None) -> Dataset:
        return load_source(
            source,
            tasks=tasks,
            per_class=config.per_class,
            seed=config.splitting_seed,
            val_fraction=config.val_fraction,
            sample_seed=config.drawing_seed,
        )

    if isinstance(sources, Mapping):
        return {name: load(source) for name, source in sources.items()}
    return {"": load(sources, config.task_list)}


def _choose_strategy(
    backbone: Backbone, data: FitData, config: FitConfig, run_dir: Path, device: str, echo: Echo
) -> tuple[FitConfig, FinalFeatures | None]:
    """`--strategy auto`: the advisor measures size and similarity, picks, explains; advice.json keeps why.
    Also returns the pretrained final features it measured, for the heads' warm start.

    With several heads it measures once, on the head with the fewest labelled images per class.
    """
    from transferlab.advisor import advise

    head = data.smallest_head()
    if len(data.heads) > 1:
        kind = "domain" if data.domains else "task"
        echo(f"advisor: measured on {kind} '{head}', the one with the fewest labelled images per class")
    advice = advise(backbone, data.view(head), config.seed, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RunDir(run_dir).advice, advice.to_json() | {"decided_by": head})
    echo(advice.explanation)
    # The advisor's settings fill in what the user left automatic; what the user set stays.
    augment = advice.augment if config.augment == "auto" else config.augment
    ratio = config.backbone_lr_ratio or advice.backbone_lr_ratio
    return config.updated(strategy=advice.strategy, augment=augment, backbone_lr_ratio=ratio), advice.final_features


def build_objective(config: FitConfig, model: TransferModel, weighting: str | None = None) -> Objective:
    """Cross-entropy for one head; the weighted heads' cross-entropies for several; plus the soft-sharing
    penalty when the heads keep their own copies of the trained stages."""
    if len(model.head_names) == 1:
        return CrossEntropy(config.label_smoothing)
    tasks: Objective = MultiTask(model.head_names, weighting or config.weighting, config.label_smoothing)
    return Total([tasks, SoftSharing(model, config.soft_l2)]) if model.soft_from is not None else tasks


def _check_heads(source: Sources, config: FitConfig) -> None:
    """Settings that need several heads, refused before any data is read."""
    domains = isinstance(source, Mapping)
    if config.sharing == "soft" and not domains and len(config.task_list or []) < 2:
        raise ConfigError("soft sharing needs several tasks or domains: each keeps its own copy of the backbone")
    if config.domain_batchnorm and not domains:
        raise ConfigError("domain_batchnorm needs several domains: give them as {name: source} or --domain")
    if config.weighting == "gradnorm" and (domains or config.sharing == "soft"):
        raise ConfigError(
            "gradnorm balances the gradients that tasks sharing one batch send into one backbone: "
            "use it with --tasks and hard sharing (equal or uncertainty weighting work everywhere)"
        )


def build_model(backbone: Backbone, data: FitData, strategy: Strategy, config: FitConfig, device: str) -> TransferModel:
    heads = {name: len(classes) for name, classes in data.heads.items()}
    soft = config.sharing == "soft"
    flips = config.test_time_flip is True and PRESETS[config.augment].flip  # resolve() has set it
    # Frozen stages are identical for every head, so they stay shared; each head copies the trained ones.
    trained_from = strategy.frozen_of(backbone.num_stages)
    if trained_from < backbone.num_stages and backbone.pretraining_images is not None:
        # What model.json records: the weights saved will have been trained on these images too, so a run dir
        # used as the next transfer's source tells the advisor how much its weights have seen.
        backbone.pretraining_images += data.train_images
    model = TransferModel(
        backbone,
        heads,
        test_time_flip=flips,
        soft_from=trained_from if soft else None,
        domains=data.domains,
        domain_norms_from=trained_from if config.domain_batchnorm else None,
        bottleneck=config.bottleneck or None,
    ).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    strategy.check(model)
    return model


def warm_start(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    data: FitData,
    device: str,
    run_dir: Path,
    echo: Echo,
    features: FinalFeatures | None = None,
) -> None:
    """Linear probe, then fine-tune: the heads first learn on frozen features, when the backbone will train.
    `features`: the advisor's, of the pretrained backbone, read instead of computed where they cover the data."""
    if not (strategy.warm_start and strategy.trains_backbone(model)):
        return
    # The heads' own weighting would be learned here and thrown away: the warm start weighs them equally.
    objective = build_objective(config, model, weighting="equal")
    accuracy = warm_start_head(model, config, data, device, run_dir, objective, features)
    echo(f"head warm start on frozen features: validation accuracy {accuracy:.4f}")


def build_run(
    source: Sources | None,
    config: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    echo: Echo = print,
    target: Source | None = None,
) -> Run:
    """Load and decode the data, choose the strategy, build the model, objective and batches; warm-start the
    heads. Writes config.yaml (and advice.json) to `run_dir`. `target`: domain adaptation's unlabelled target
    (in memory, say; a path or built-in name may be given as `config.target` instead).

    Under torchrun, rank 0 builds first (the advisor runs once, and it alone writes) and the other ranks then
    build what its config.yaml settled, silently, without the heads' warm start: DDP gives them rank 0's
    weights."""
    world = join(resolve_device(config.device))
    run_dir = world.from_main(Path(run_dir))  # a name from the clock is rank 0's
    following = not world.is_main
    if following:
        world.barrier()  # rank 0 has saved its settings
        echo = silent
    settled = resume or following  # the settings come from the run dir, and the heads are not warm-started
    source, target_source, config = _inputs(source, target, config, run_dir, settled)
    _check_heads(source, config)
    torch.manual_seed(config.seed)
    device = world.device
    datasets = _load(source, config)
    scratch = config.strategy == "scratch"  # the structure only: no weights to load
    backbone = open_backbone(config.backbone, pretrained=not scratch, weights=None if scratch else config.weights)
    size = max(image_size_for(dataset, backbone, config.image_size) for dataset in datasets.values())
    data = FitData({name: prepare_for(dataset, backbone, size) for name, dataset in datasets.items()})
    features = None
    if config.strategy == "auto":
        config, features = _choose_strategy(backbone, data, config, run_dir, device, echo)
    strategy = parse_strategy(config.strategy)
    if not strategy.pretrained and backbone.weights_source != "random":  # the advisor chose scratch
        backbone, features = open_backbone(config.backbone, pretrained=False), None
    smallest = data.train_counts(data.smallest_head())
    config = resolve(config.updated(image_size=size), strategy, int(smallest.min()), data.train_images)
    config = config.updated(precision=resolve_precision(config.precision, device))
    config, target_data = prepare_adaptation(target_source, config, backbone, data, run_dir, device, echo)
    assert config.backbone_lr_ratio is not None, "resolve() sets the ratio"
    strategy = replace(strategy, backbone_lr_ratio=config.backbone_lr_ratio)  # a configured ratio wins
    model = build_model(backbone, data, strategy, config, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not settled:
        config.save(RunDir(run_dir).config)
        files = RunDir(run_dir)
        for stale in (files.metrics, files.selected, files.refit_checkpoint, files.refit_metrics):
            stale.unlink(missing_ok=True)  # an earlier run's in the same dir
    if world.active and world.is_main:
        world.barrier()  # the other ranks may read config.yaml now
    objective = _objective(config, model, backbone, data, target_data, world, echo)
    _describe(data, datasets, backbone, strategy, model, config, echo)
    if target_data is not None:
        echo(describe_adaptation(config, target_data))
    if not settled:
        warm_start(model, strategy, config, data, device, run_dir, echo, features)
    train, val, target_val, note = run_batches(model, strategy, config, data, target_data, world)
    echo(f"input: {note}")
    objective = objective.to(device)
    return Run(
        run_dir,
        config,
        data,
        model,
        strategy,
        objective,
        train,
        val,
        note,
        device,
        echo,
        target_data,
        target_val,
        world,
    )


def _objective(
    config: FitConfig,
    model: TransferModel,
    backbone: Backbone,
    data: FitData,
    target: PreparedData | None,
    world: World,
    echo: Echo,
) -> Objective:
    """The loss: domain adaptation's where there is a `target`. Its source images' importance weights, where
    asked for, are measured once, by rank 0 (a forward pass over both domains), and sent to the other ranks."""
    if target is None:
        return build_objective(config, model)
    source = data.sources[""]
    weights = source_image_weights(config, backbone, source, target, world.device, echo) if world.is_main else None
    return build_adaptation(config, model, world.from_main(weights))


def run_batches(
    model: TransferModel,
    strategy: Strategy,
    config: FitConfig,
    data: FitData,
    target: PreparedData | None,
    world: World,
) -> tuple[Batches, Batches, Batches | None, str]:
    """(train, val, the target's held-out images or None, a note on the input); the training batches are this
    rank's share of each batch."""
    target_val = None
    if target is None:
        train, val, note = make_fit_batches(model, strategy, config, data, world.device, world)
    else:
        side_by_side = reads_target(config)
        source = data.sources[""]
        made = make_paired_batches(model, strategy, config, source, target, world.device, side_by_side, world)
        train, val, target_val, note = made
    if world.active:
        train = shard(train, world.rank, world.size)
        note += f"; each batch (and the cache, if any) shared out over {world.size} processes"
    return train, val, target_val, note


def silent(message: str) -> None:
    """The echo of every rank but the first: one process speaks for the run."""


def _describe(
    data: FitData,
    datasets: dict[str, Dataset],
    backbone: Backbone,
    strategy: Strategy,
    model: TransferModel,
    config: FitConfig,
    echo: Echo,
) -> None:
    names = ", ".join(dataset.name for dataset in datasets.values())
    heads = data.heads
    if len(heads) == 1:
        classes = next(iter(heads.values()))
        echo(f"data: {names}, {len(classes)} classes, {data.sizes()}, {len(data.skipped)} skipped")
    else:
        kind = "domains" if data.domains else "tasks"
        listed = ", ".join(f"{name} ({len(classes)} classes)" for name, classes in heads.items())
        echo(f"data: {names}, {len(heads)} {kind}: {listed}; {data.sizes()}, {len(data.skipped)} skipped")
    echo(f"backbone: {backbone.name} (weights: {backbone.weights_source}), image size {config.image_size}")
    sharing = ""
    if len(heads) > 1:
        sharing = f"; {config.sharing} sharing, {config.weighting} weighting"
        if config.weighting == "gradnorm" and not (strategy.trains_backbone(model) or model.bottleneck):
            sharing += " (nothing shared is trained, so its weights stay equal)"
        if model.soft_from is not None:
            sharing += f", a copy of stages {model.soft_from}.. per head, soft_l2 {config.soft_l2:g}"
        if model.domain_norms_from is not None:
            sharing += f", BatchNorm per domain from stage {model.domain_norms_from}"
    echo(f"strategy: {strategy.name}: {strategy.describe(model)}{sharing}")
    if config.time_limit:
        budget = f"time limit: {config.time_limit:.4g} s of training, the epochs and the schedule fitted to it"
        if not config.ema_epochs:
            budget += f"; no weight average (--ema-epochs {EMA_EPOCHS:g}: on)"
        echo(budget)
