"""The fit pipeline: source → samples → decoded cache → batches → TransferModel → Trainer → run dir.

It comes in three parts that every kind of fit shares: `build_run` (data, backbone, strategy, model,
objective, batches), `train_run` (the one Trainer, with the run dir's callbacks) and `finish_run` (the kept
model scored and summarised). `fit` is the three in a row, for one task, several tasks or several domains.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.adaptation.methods import (
    adapt_batchnorm,
    build_adaptation,
    describe_adaptation,
    prepare_adaptation,
    reads_target,
    source_image_weights,
)
from transferlab.adaptation.monitor import DomainGap
from transferlab.backbones import Backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Dataset, PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.summary import summarize
from transferlab.data.transforms import PRESETS
from transferlab.defaults import EMA_EPOCHS, fits_an_ensemble, resolve
from transferlab.distributed import World, join
from transferlab.errors import ConfigError, TransferlabError
from transferlab.fitdata import FitData
from transferlab.model import TransferModel, save_model
from transferlab.random_state import callers_random_state
from transferlab.report.html import write_report
from transferlab.report.plots import plot_curves
from transferlab.run_backbone import open_backbone
from transferlab.rundir import RunDir
from transferlab.scoring import Probabilities, evaluate_run, scored_probabilities
from transferlab.sizing import image_size_for, prepare_for
from transferlab.strategies import Strategy, parse_strategy
from transferlab.train.batches import Batches, shard
from transferlab.train.callbacks import (
    BestCheckpoint,
    EarlyStopping,
    FinalCheckpoint,
    MetricsLog,
    Progress,
    ResumableCheckpoint,
    StopAfter,
    TimeBudget,
    interruptible,
)
from transferlab.train.features import FinalFeatures
from transferlab.train.inputs import make_fit_batches, make_paired_batches
from transferlab.train.loop import Callback, Trainer
from transferlab.train.objectives import CrossEntropy, MultiTask, Objective, SoftSharing, Total
from transferlab.train.precision import inference_dtype, resolve_precision
from transferlab.train.state import TrainState
from transferlab.train.warmup import warm_start_head

Echo = Callable[[str], None]
# A fit's data: one source, or, for multi-domain learning, {domain: source}.
Sources = Source | Mapping[str, Source]


@dataclass
class FitResult:
    run_dir: Path
    model: TransferModel
    heads: dict[str, list[str]]  # {task or domain: class names}
    config: FitConfig
    strategy: Strategy
    state: TrainState
    scores: dict[str, Any]  # on the test split, or on validation when the source has no test split
    image_size: int
    refit: Refit | None = None  # what `config.refit` did
    # The kept model's class probabilities behind `scores`, where this process computed them (an ensemble
    # averages its members' rather than running them all again)
    test_probabilities: Probabilities | None = None

    @property
    def classes(self) -> list[str]:
        """The primary (first) head's classes."""
        return next(iter(self.heads.values()))


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


def _build_model(
    backbone: Backbone, data: FitData, strategy: Strategy, config: FitConfig, device: str
) -> TransferModel:
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


def _warm_start(
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
        echo = _silent
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
    model = _build_model(backbone, data, strategy, config, device)
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
        _warm_start(model, strategy, config, data, device, run_dir, echo, features)
    train, val, target_val, note = _batches(model, strategy, config, data, target_data, world)
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


def _batches(
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


def _silent(message: str) -> None:
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


def _saver(run: Run) -> Callable[[Trainer], None]:
    """Saves the model a trainer validates (its weights' moving average, if any) as the run dir's model; on rank
    0 alone."""

    def save(trainer: Trainer) -> None:
        if run.world.is_main:
            save_model(trainer.eval_model, run.run_dir, model_extra(run))

    return save


def _callbacks(run: Run, quiet: bool) -> list[Callback]:
    """The run dir's callbacks; on a rank other than the first, only those that decide (which epoch is the
    best, when to stop): they decide alike on every rank, and rank 0 alone writes."""
    config, run_dir, main = run.config, run.run_dir, run.world.is_main
    assert config.patience is not None, "resolve() sets the patience"
    callbacks: list[Callback] = [BestCheckpoint(_saver(run), metric=kept_by(config)), EarlyStopping(config.patience)]
    if config.time_limit:  # before the checkpoint, which then carries the epoch count it fits
        callbacks.append(TimeBudget(config.time_limit))
    if main:
        callbacks = [MetricsLog(RunDir(run_dir).metrics), *callbacks, ResumableCheckpoint()]
    if run.target_val is not None:
        callbacks.insert(0, DomainGap(run.val, run.target_val))  # first: the others read what it measures
    if not quiet and main:
        callbacks.append(Progress())
    return callbacks


def kept_by(config: FitConfig) -> str:
    """The epoch metric that keeps the checkpoint and stops early: the source's validation loss (tempered or
    not), or the target loss that DEV estimates from it (DomainGap measures it)."""
    if config.validation == "dev":
        return "dev_loss"
    return {"loss": "val_loss", "tempered_loss": "val_loss_tempered"}[config.keep_by]


def model_extra(run: Run) -> dict[str, Any]:
    """What model.json holds beside the structure: each head's classes, the strategy, the image size."""
    return {"classes": run.heads, "strategy": run.strategy.name, "image_size": run.config.image_size}


def train_run(run: Run, *, resume: bool = False, quiet: bool = False, callbacks: Sequence[Callback] = ()) -> TrainState:
    """The one training loop over `run`, with the run dir's callbacks (and `callbacks`, after them); Ctrl-C
    leaves a resumable checkpoint."""
    state = _train(run, [*_callbacks(run, quiet), *callbacks], resume)
    if state.best_epoch and run.world.is_main:  # the other ranks keep no history
        kept, metric = state.history[state.best_epoch - 1], kept_by(run.config)
        what = {
            "val_loss": "validation loss",
            "val_loss_tempered": "temperature-scaled validation loss",
            "dev_loss": "DEV's estimate of the target loss",
        }[metric]
        run.echo(
            f"stopped: {state.stop_reason}; kept epoch {state.best_epoch}: {what} {kept[metric]:.4f} "
            f"(lowest {state.best_metric:.4f}), validation accuracy {kept['val_accuracy']:.4f}"
        )
    return state


def _train(
    run: Run, callbacks: list[Callback], resume: bool, *, held_out: bool = True, checkpoint: Path | None = None
) -> TrainState:
    """Run the one Trainer over `run` with `callbacks`, validating on `run.val` when `held_out`; `resume`: from
    `checkpoint` (default: the run dir's). Ctrl-C leaves a resumable checkpoint."""
    trainer = Trainer(
        run.model,
        run.strategy,
        run.config,
        run.train,
        run.val if held_out else None,
        run.run_dir,
        callbacks,
        objective=run.objective,
        world=run.world,
        checkpoint=checkpoint,
    )
    if resume:
        trainer.resume()
        run.echo(f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    with interruptible(trainer):
        return trainer.fit()


@dataclass
class Refit:
    """What a refit did: trained again on `train_images` (training and validation images) for `epochs` of the
    `schedule_epochs`-epoch schedule, in `seconds`. `selected`: the scores of the model validation had chosen,
    which the refit's model replaces."""

    epochs: int
    schedule_epochs: int
    train_images: int
    seconds: float
    selected: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def refit_run(
    run: Run, chosen: TrainState, *, resume: bool = False, quiet: bool = False, callbacks: Sequence[Callback] = ()
) -> tuple[Run, Refit]:
    """Train `run`'s recipe again, from the start, on its training and validation images together, up to the
    epoch that validation chose (`chosen.best_epoch`) on the schedule's full length, and keep that model.

    Validation's images only chose the epoch; here they train the model too (a quarter more images at the
    default split). The chosen model is scored first and its scores kept in selected.json. Returns the
    refit's Run and what it did. `resume`: go on from the refit's checkpoint, when it had written one.
    `callbacks` join the refit's own, after them.
    """
    files, config, strategy, main = RunDir(run.run_dir), run.config, run.strategy, run.world.is_main
    assert chosen.best_epoch is not None and config.epochs is not None, "a trained run has a kept epoch"
    selected = _selected(run, chosen) if main else {}
    data = run.data.with_val_in_train()
    torch.manual_seed(config.seed)  # the new heads start alike whether or not the first training ran in this process
    backbone = open_backbone(
        config.backbone, pretrained=strategy.pretrained, weights=config.weights if strategy.pretrained else None
    )
    model = _build_model(backbone, data, strategy, config, run.device)
    resuming = resume and files.refit_checkpoint.is_file()
    run.echo(
        f"refit: training again on {data.train_images} images (training and validation) up to epoch "
        f"{chosen.best_epoch} of {config.epochs}, the epoch validation chose"
    )
    if not resuming and main:  # DDP gives the other ranks rank 0's weights
        # Silent: its validation accuracy would be read on images it has now trained on.
        _warm_start(model, strategy, config, data, run.device, run.run_dir, _silent)
        files.refit_metrics.unlink(missing_ok=True)
    train, _, _, note = _batches(model, strategy, config, data, None, run.world)
    objective = build_objective(config, model).to(run.device)
    refit = replace(run, model=model, objective=objective, train=train, input_note=note)
    own: list[Callback] = [StopAfter(chosen.best_epoch), FinalCheckpoint(_saver(refit))]
    if main:
        own = [MetricsLog(files.refit_metrics), *own, ResumableCheckpoint()]
    if main and not quiet:
        own.append(Progress())
    state = _train(refit, [*own, *callbacks], resuming, held_out=False, checkpoint=files.refit_checkpoint)
    return refit, Refit(chosen.best_epoch, config.epochs, data.train_images, round(state.elapsed, 2), selected)


def _selected(run: Run, chosen: TrainState) -> dict[str, Any]:
    """The scores of the model validation chose (the run dir's, before a refit replaces it), kept with the
    loop's state in selected.json: a resumed refit reads both from there."""
    record = RunDir(run.run_dir).selected
    scores = json.loads(record.read_text()).get("scores") if record.is_file() else None
    if scores is None:
        write_json_atomic(record, {"state": asdict(chosen)})  # first: validation's choice survives a kill from here
        run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
        scores = {key: value for key, value in evaluate_run(run).items() if key in ("accuracy", "macro_f1", "split")}
        write_json_atomic(record, {"state": asdict(chosen), "scores": scores})
    run.echo(f"selected model (epoch {chosen.best_epoch}): {scores['split']} accuracy {scores['accuracy']:.4f}")
    return scores


def chosen_state(run_dir: Path) -> TrainState | None:
    """The loop's state when validation chose the epoch, once a refit has begun (None before)."""
    record = RunDir(run_dir).selected
    return TrainState(**json.loads(record.read_text())["state"]) if record.is_file() else None


def finish_run(run: Run, state: TrainState, refit: Refit | None = None) -> FitResult:
    """Load the kept model, plot the curves (validation's, when there was a `refit`), score it, and write
    summary.json. A refit's model is scored on the test split; without one, nothing held out is left to score
    it, and the selected model's validation scores stand for it, as model selection's estimate."""
    run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
    if run.target is not None and run.config.adaptation == "adabn":
        adapt_batchnorm(run.model, run.data.sources[""], run.target, run.config, run.device)
        save_model(run.model, run.run_dir, model_extra(run))
        run.echo("adabn: every BatchNorm layer's statistics aligned to normalise the target as it did the source")
    plot_curves(state.history, RunDir(run.run_dir).curves)
    probs = None
    if refit is not None and refit.selected["split"] != "test":
        scores = json.loads(RunDir(run.run_dir).scores.read_text())
        run.echo("no test split: the refit's model is judged by the validation scores of the model it replaces")
    else:
        probs = scored_probabilities(run)
        scores = evaluate_run(run, probs)
    for head, each in scores.get("tasks", {}).items():
        run.echo(f"{each['split']} {head}: accuracy {each['accuracy']:.4f}, macro-F1 {each['macro_f1']:.4f}")
    notes = " (mean over heads)" if "tasks" in scores else ""
    if inference_dtype(run.config.inference_precision, run.device) is not None:
        notes += "; scored in bfloat16 (--inference-precision 32: float32)"
    if run.config.time_limit is not None and run.config.test_time_flip is False:
        notes += "; no test-time flip under --time-limit (--test-time-flip: on)"
    if "source" in scores:
        source = scores["source"]
        run.echo(f"source {source['split']}: accuracy {source['accuracy']:.4f}, macro-F1 {source['macro_f1']:.4f}")
    run.echo(f"{scores['split']}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}{notes}")
    if scores.get("target", "") is None:
        run.echo("target accuracy unknown: the target has no labelled test split")
    summary = {
        "strategy": run.strategy.name,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.elapsed + (refit.seconds if refit else 0.0), 2),
        "input": run.input_note,
        "skipped": [{"path": s.path, "reason": s.reason} for s in run.data.skipped],
        "accuracy": scores["accuracy"],
        "evaluated_on": scores["split"],
    }
    if refit is not None:
        summary["refit"] = refit.to_json()
    write_json_atomic(RunDir(run.run_dir).summary, summary)
    write_json_atomic(RunDir(run.run_dir).data, {name: summarize(d, name) for name, d in run.data.sources.items()})
    if run.config.report:
        run.echo(f"report: {write_report(run.run_dir)}")
    assert run.config.image_size is not None, "build_run sets the image size"
    return FitResult(
        run.run_dir, run.model, run.heads, run.config, run.strategy, state, scores, run.config.image_size, refit, probs
    )


def fit(
    source: Sources | None,
    config: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    target: Source | None = None,
) -> FitResult:
    """Fit `config.backbone` to `source` with `config.strategy`; everything lands in `run_dir`.

    `source` is one data source (its `config.tasks` label columns, or its one label), or {domain: source}
    for multi-domain learning (also given as `config.domains`). `target` (or `config.target`): adapt to this
    unlabelled domain with `config.adaptation` (domain adaptation; see adaptation/).
    """
    files = RunDir(Path(run_dir))
    asked = FitConfig.load(files.config) if resume and files.config.is_file() else config
    # An ensemble's run dir holds no checkpoint of its own (its members do): one that does is a single run.
    single_before = resume and files.checkpoint.is_file()
    if target is None and not single_before and fits_an_ensemble(asked):
        from transferlab.ensemble import fit_ensemble  # which fits each member through fit_run below

        return fit_ensemble(source, config, Path(run_dir), resume=resume, quiet=quiet)
    return fit_run(source, config, run_dir, resume=resume, quiet=quiet, target=target)[1]


@callers_random_state()
def fit_run(
    source: Sources | None,
    config: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    target: Source | None = None,
) -> tuple[Run, FitResult]:
    """`fit` of one model: the Run it trained, and what it kept and scored."""
    echo: Echo = _silent if quiet else (lambda msg: print(msg, flush=True))
    run = build_run(source, config, Path(run_dir), resume=resume, echo=echo, target=target)
    chosen = chosen_state(run.run_dir) if resume else None  # a resumed refit: the first training is done
    state = chosen or train_run(run, resume=resume, quiet=quiet)
    refit = None
    if run.config.refit:
        run, refit = refit_run(run, state, resume=resume, quiet=quiet)
    if run.world.is_main:
        result = finish_run(run, state, refit)
    run.world.barrier()  # the other ranks return what rank 0 kept and scored
    if not run.world.is_main:
        run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
        scores = json.loads(RunDir(run.run_dir).scores.read_text())
        assert run.config.image_size is not None, "build_run sets the image size"
        result = FitResult(
            run.run_dir, run.model, run.heads, run.config, run.strategy, state, scores, run.config.image_size, refit
        )
    return run, result
