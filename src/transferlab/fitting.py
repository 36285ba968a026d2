"""The fit pipeline: source → samples → decoded cache → batches → TransferModel → Trainer → run dir.

It comes in three parts that every kind of fit shares: `build_run` (data, backbone, strategy, model,
objective, batches), `train_run` (the one Trainer, with the run dir's callbacks) and `finish_run` (the kept
model scored and summarised). `fit` is the three in a row, for one task, several tasks or several domains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.backbones import Backbone, create_backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Dataset, load_source
from transferlab.data.sources import Source
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.defaults import image_size_for, prepare_for, resolve
from transferlab.errors import ConfigError, TransferlabError
from transferlab.evaluate import probabilities, score
from transferlab.fitdata import FitData
from transferlab.model import WEIGHTS_FILE, TransferModel, save_model
from transferlab.report.plots import plot_confusion, plot_curves
from transferlab.strategies import Strategy, parse_strategy
from transferlab.train.batches import Batches
from transferlab.train.callbacks import (
    BestCheckpoint,
    EarlyStopping,
    MetricsLog,
    Progress,
    ResumableCheckpoint,
    TimeBudget,
    interruptible,
)
from transferlab.train.inputs import make_fit_batches
from transferlab.train.loop import Callback, Trainer
from transferlab.train.objectives import CrossEntropy, MultiTask, Objective, SoftSharing, Total
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

    @property
    def heads(self) -> dict[str, list[str]]:
        return self.data.heads


def _source_and_config(
    source: Sources | None, config: FitConfig, run_dir: Path, resume: bool
) -> tuple[Sources, FitConfig]:
    """A resumed run takes its settings (and, unless given, its source) from its own config.yaml."""
    if resume:
        config = FitConfig.load(run_dir / "config.yaml")
        source = source if source is not None else (config.domain_sources or config.source)
    if source is None and config.domain_sources:
        source = config.domain_sources
    if source is None:
        hint = " (this run was fitted on in-memory arrays: pass them again to resume)" if resume else ""
        raise TransferlabError(f"a data source is needed{hint}")
    return source, config


def _load(sources: Sources, config: FitConfig) -> dict[str, Dataset]:
    """{domain: Dataset}; one source without domains is `{"": Dataset}`."""

    def load(source: Source, tasks: list[str] | None = None) -> Dataset:
        return load_source(
            source, tasks=tasks, per_class=config.per_class, seed=config.seed, val_fraction=config.val_fraction
        )

    if isinstance(sources, Mapping):
        return {name: load(source) for name, source in sources.items()}
    return {"": load(sources, config.task_list)}


def _choose_strategy(
    backbone: Backbone, data: FitData, config: FitConfig, run_dir: Path, device: str, echo: Echo
) -> FitConfig:
    """`--strategy auto`: the advisor measures size and similarity, picks, explains; advice.json keeps why.

    With several heads it measures once, on the head with the fewest labelled images per class.
    """
    from transferlab.advisor import advise

    head = data.smallest_head()
    if len(data.heads) > 1:
        kind = "domain" if data.domains else "task"
        echo(f"advisor: measured on {kind} '{head}', the one with the fewest labelled images per class")
    advice = advise(backbone, data.view(head), config.seed, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "advice.json", advice.to_json() | {"decided_by": head})
    echo(advice.explanation)
    # The advisor's settings fill in what the user left automatic; what the user set stays.
    augment = advice.augment if config.augment == "auto" else config.augment
    ratio = config.backbone_lr_ratio or advice.backbone_lr_ratio
    return config.updated(strategy=advice.strategy, augment=augment, backbone_lr_ratio=ratio)


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


def _build_model(backbone: Backbone, data: FitData, strategy: Strategy, config: FitConfig) -> TransferModel:
    heads = {name: len(classes) for name, classes in data.heads.items()}
    soft = config.sharing == "soft"
    flips = config.test_time_flip and PRESETS[config.augment].flip
    # Frozen stages are identical for every head, so they stay shared; each head copies the trained ones.
    trained_from = strategy.frozen_of(backbone.num_stages)
    return TransferModel(
        backbone,
        heads,
        test_time_flip=flips,
        soft_from=trained_from if soft else None,
        domains=data.domains,
        domain_norms_from=trained_from if config.domain_batchnorm else None,
    )


def build_run(
    source: Sources | None, config: FitConfig, run_dir: Path, *, resume: bool = False, echo: Echo = print
) -> Run:
    """Load and decode the data, choose the strategy, build the model, objective and batches; warm-start the
    heads. Writes config.yaml (and advice.json) to `run_dir`."""
    run_dir = Path(run_dir)
    source, config = _source_and_config(source, config, run_dir, resume)
    _check_heads(source, config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    datasets = _load(source, config)
    if isinstance(source, str | Path):
        config = config.updated(source=str(source))
    elif isinstance(source, Mapping) and all(isinstance(each, str | Path) for each in source.values()):
        config = config.updated(domains=[f"{name}={each}" for name, each in source.items()])  # for --resume
    scratch = config.strategy == "scratch"  # the structure only: no weights to load
    backbone = create_backbone(config.backbone, pretrained=not scratch, weights=None if scratch else config.weights)
    size = max(image_size_for(dataset, backbone, config.image_size) for dataset in datasets.values())
    data = FitData({name: prepare_for(dataset, backbone, size) for name, dataset in datasets.items()})
    if config.strategy == "auto":
        config = _choose_strategy(backbone, data, config, run_dir, device, echo)
    strategy = parse_strategy(config.strategy)
    if not strategy.pretrained and backbone.weights_source != "random":  # the advisor chose scratch
        backbone = create_backbone(config.backbone, pretrained=False)
    smallest = data.train_counts(data.smallest_head())
    config = resolve(config.updated(image_size=size), strategy, int(smallest.min()), data.train_images)
    assert config.backbone_lr_ratio is not None, "resolve() sets the ratio"
    strategy = replace(strategy, backbone_lr_ratio=config.backbone_lr_ratio)  # a configured ratio wins
    model = _build_model(backbone, data, strategy, config).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    strategy.check(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        config.save(run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    _describe(data, datasets, backbone, strategy, model, config, echo)
    if strategy.warm_start and strategy.trains_backbone(model) and not resume:
        # The heads' own weighting would be learned here and thrown away: the warm start weighs them equally.
        warm_objective = build_objective(config, model, weighting="equal")
        accuracy = warm_start_head(model, config, data, device, run_dir, warm_objective)
        echo(f"head warm start on frozen features: validation accuracy {accuracy:.4f}")
    train, val, note = make_fit_batches(model, strategy, config, data, device)
    echo(f"input: {note}")
    objective = build_objective(config, model).to(device)
    return Run(run_dir, config, data, model, strategy, objective, train, val, note, device, echo)


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
        if model.soft_from is not None:
            sharing += f", a copy of stages {model.soft_from}.. per head, soft_l2 {config.soft_l2:g}"
        if model.domain_norms_from is not None:
            sharing += f", BatchNorm per domain from stage {model.domain_norms_from}"
    echo(f"strategy: {strategy.name}: {strategy.describe(model)}{sharing}")


def _callbacks(run: Run, extra: dict, quiet: bool) -> list[Callback]:
    config, run_dir = run.config, run.run_dir
    assert config.patience is not None, "resolve() sets the patience"
    callbacks: list[Callback] = [
        MetricsLog(run_dir / "metrics.jsonl"),
        BestCheckpoint(lambda trainer: save_model(trainer.eval_model, run_dir, extra)),
        EarlyStopping(config.patience),
        ResumableCheckpoint(),
    ]
    if config.time_limit:
        callbacks.append(TimeBudget(config.time_limit))
    if not quiet:
        callbacks.append(Progress())
    return callbacks


def model_extra(run: Run) -> dict[str, Any]:
    """What model.json holds beside the structure: each head's classes, the strategy, the image size."""
    return {"classes": run.heads, "strategy": run.strategy.name, "image_size": run.config.image_size}


def train_run(run: Run, *, resume: bool = False, quiet: bool = False, callbacks: Sequence[Callback] = ()) -> TrainState:
    """The one training loop over `run`, with the run dir's callbacks (and `callbacks`, after them); Ctrl-C
    leaves a resumable checkpoint."""
    callbacks = [*_callbacks(run, model_extra(run), quiet), *callbacks]
    trainer = Trainer(
        run.model, run.strategy, run.config, run.train, run.val, run.run_dir, callbacks, objective=run.objective
    )
    if resume:
        trainer.resume()
        run.echo(f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    with interruptible(trainer):
        state = trainer.fit()
    if state.best_epoch:
        kept = state.history[state.best_epoch - 1]
        run.echo(
            f"stopped: {state.stop_reason}; kept epoch {state.best_epoch}: validation loss {kept['val_loss']:.4f} "
            f"(lowest {state.best_metric:.4f}), accuracy {kept['val_accuracy']:.4f}"
        )
    return state


def evaluate_run(run: Run) -> dict[str, Any]:
    """Scores of the run's model on the test split (validation when the source has none), saved as eval.json.

    One head: `score`'s keys. Several: `{"tasks": {head: scores}}` (each head on the images labelled for it),
    with `accuracy` and `macro_f1` their means over heads.
    """
    model, data = run.model, run.data
    normalizer = Normalizer(model.backbone.preprocessing, run.config.channels_last)
    per_head: dict[str, dict[str, Any]] = {}
    split = ""
    for name, source in data.sources.items():
        split = "test" if "test" in source.splits else "val"
        test = source.splits[split]
        probs = probabilities(model, test.images, normalizer, device=run.device, domain=name or None)
        labels = test.labels.view(len(test.labels), -1)  # a column per head that ran, in its order
        for column, (head, head_probs) in enumerate(probs.items()):
            keep = torch.nonzero(labels[:, column] >= 0).flatten()  # the images labelled for this head
            paths = [str(test.paths[i]) for i in keep] if test.paths else None
            head_scores = score(head_probs[keep], labels[keep, column], data.heads[head], paths)
            per_head[head] = head_scores | {"split": split}
    if len(per_head) == 1:
        scores = next(iter(per_head.values()))
        plot_confusion(scores["confusion"], data.heads[model.head_names[0]], run.run_dir / "confusion.png")
    else:
        scores = {
            "accuracy": sum(s["accuracy"] for s in per_head.values()) / len(per_head),
            "macro_f1": sum(s["macro_f1"] for s in per_head.values()) / len(per_head),
            "split": split,
            "tasks": per_head,
        }
        for head, head_scores in per_head.items():
            plot_confusion(head_scores["confusion"], data.heads[head], run.run_dir / f"confusion-{head}.png")
    write_json_atomic(run.run_dir / "eval.json", scores)
    return scores


def finish_run(run: Run, state: TrainState) -> FitResult:
    """Load the kept model, plot the curves, score it, and write summary.json."""
    run.model.load_state_dict(load_file(run.run_dir / WEIGHTS_FILE))
    plot_curves(state.history, run.run_dir / "curves.png")
    scores = evaluate_run(run)
    for head, each in scores.get("tasks", {}).items():
        run.echo(f"{each['split']} {head}: accuracy {each['accuracy']:.4f}, macro-F1 {each['macro_f1']:.4f}")
    mean = " (mean over heads)" if "tasks" in scores else ""
    run.echo(f"{scores['split']}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}{mean}")
    summary = {
        "strategy": run.strategy.name,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.elapsed, 2),
        "input": run.input_note,
        "skipped": [{"path": s.path, "reason": s.reason} for s in run.data.skipped],
        "accuracy": scores["accuracy"],
        "evaluated_on": scores["split"],
    }
    write_json_atomic(run.run_dir / "summary.json", summary)
    assert run.config.image_size is not None, "build_run sets the image size"
    return FitResult(run.run_dir, run.model, run.heads, run.config, run.strategy, state, scores, run.config.image_size)


def fit(
    source: Sources | None, config: FitConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False
) -> FitResult:
    """Fit `config.backbone` to `source` with `config.strategy`; everything lands in `run_dir`.

    `source` is one data source (its `config.tasks` label columns, or its one label), or {domain: source}
    for multi-domain learning (also given as `config.domains`).
    """
    echo: Echo = (lambda _msg: None) if quiet else (lambda msg: print(msg, flush=True))
    run = build_run(source, config, Path(run_dir), resume=resume, echo=echo)
    state = train_run(run, resume=resume, quiet=quiet)
    return finish_run(run, state)
