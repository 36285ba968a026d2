"""The fit pipeline: source → samples → decoded cache → batches → TransferModel → Trainer → run dir."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.backbones import Backbone, create_backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.defaults import image_size_for, prepare_for, resolve
from transferlab.errors import TransferlabError
from transferlab.evaluate import probabilities, score
from transferlab.model import WEIGHTS_FILE, TransferModel, save_model
from transferlab.report.plots import plot_confusion, plot_curves
from transferlab.strategies import Strategy, parse_strategy
from transferlab.train.callbacks import (
    BestCheckpoint,
    EarlyStopping,
    MetricsLog,
    Progress,
    ResumableCheckpoint,
    TimeBudget,
    interruptible,
)
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Callback, Trainer
from transferlab.train.state import TrainState
from transferlab.train.warmup import warm_start_head

log = logging.getLogger("transferlab")


@dataclass
class FitResult:
    run_dir: Path
    model: TransferModel
    classes: list[str]
    config: FitConfig
    strategy: Strategy
    state: TrainState
    scores: dict[str, Any]  # on the test split, or on validation when the source has no test split
    image_size: int


def _source_and_config(
    source: Source | None, config: FitConfig, run_dir: Path, resume: bool
) -> tuple[Source, FitConfig]:
    """A resumed run takes its settings (and, unless given, its source) from its own config.yaml."""
    if resume:
        config = FitConfig.load(run_dir / "config.yaml")
        source = source if source is not None else config.source
    if source is None:
        hint = " (this run was fitted on in-memory arrays: pass them again to resume)" if resume else ""
        raise TransferlabError(f"a data source is needed{hint}")
    return source, config


def _choose_strategy(
    backbone: Backbone, data: PreparedData, config: FitConfig, run_dir: Path, device: str, echo: Callable[[str], None]
) -> FitConfig:
    """`--strategy auto`: the advisor measures size and similarity, picks, explains; advice.json keeps why."""
    from transferlab.advisor import advise

    advice = advise(backbone, data, config.seed, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "advice.json", advice.to_json())
    echo(advice.explanation)
    # The advisor's settings fill in what the user left automatic; what the user set stays.
    augment = advice.augment if config.augment == "auto" else config.augment
    ratio = config.backbone_lr_ratio or advice.backbone_lr_ratio
    return config.updated(strategy=advice.strategy, augment=augment, backbone_lr_ratio=ratio)


def _callbacks(config: FitConfig, run_dir: Path, extra: dict, quiet: bool) -> list[Callback]:
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


def _evaluate(model: TransferModel, data: PreparedData, config: FitConfig, device: str, run_dir: Path) -> dict:
    """Scores on the test split (the validation split when the source has none), saved as eval.json."""
    split = "test" if "test" in data.splits else "val"
    test = data.splits[split]
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
    probs = probabilities(model, test.images, normalizer, device=device)
    scores = score(probs, test.labels, data.classes, [str(p) for p in test.paths] if test.paths else None)
    scores["split"] = split
    write_json_atomic(run_dir / "eval.json", scores)
    plot_confusion(scores["confusion"], data.classes, run_dir / "confusion.png")
    return scores


def fit(
    source: Source | None, config: FitConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False
) -> FitResult:
    """Fit `config.backbone` to `source` with `config.strategy`; everything lands in `run_dir`."""
    run_dir = Path(run_dir)
    source, config = _source_and_config(source, config, run_dir, resume)
    echo = (lambda _msg: None) if quiet else (lambda msg: print(msg, flush=True))
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dataset = load_source(source, per_class=config.per_class, seed=config.seed, val_fraction=config.val_fraction)
    if isinstance(source, str | Path):
        config = config.updated(source=str(source))
    scratch = config.strategy == "scratch"  # the structure only: no weights to load
    backbone = create_backbone(config.backbone, pretrained=not scratch, weights=None if scratch else config.weights)
    size = image_size_for(dataset, backbone, config.image_size)
    data = prepare_for(dataset, backbone, size)
    if config.strategy == "auto":
        config = _choose_strategy(backbone, data, config, run_dir, device, echo)
    strategy = parse_strategy(config.strategy)
    if not strategy.pretrained and backbone.weights_source != "random":  # the advisor chose scratch
        backbone = create_backbone(config.backbone, pretrained=False)
    counts = torch.bincount(data.splits["train"].labels, minlength=len(data.classes))
    config = resolve(config.updated(image_size=size), strategy, int(counts.min()), int(counts.sum()))
    assert config.backbone_lr_ratio is not None, "resolve() sets the ratio"
    strategy = replace(strategy, backbone_lr_ratio=config.backbone_lr_ratio)  # a configured ratio wins
    flips = config.test_time_flip and PRESETS[config.augment].flip
    model = TransferModel(backbone, len(data.classes), test_time_flip=flips).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    strategy.check(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        config.save(run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    sizes = {name: len(split.labels) for name, split in data.splits.items()}
    echo(f"data: {dataset.name}, {len(data.classes)} classes, {sizes}, {len(data.skipped)} skipped")
    echo(f"backbone: {backbone.name} (weights: {backbone.weights_source}), image size {config.image_size}")
    echo(f"strategy: {strategy.name}: {strategy.describe(model)}")
    if strategy.warm_start and strategy.trains_backbone(model) and not resume:
        accuracy = warm_start_head(model, config, data, device, run_dir)
        echo(f"head warm start on frozen features: validation accuracy {accuracy:.4f}")
    train_batches, val_batches, note = make_batches(model, strategy, config, data, device)
    echo(f"input: {note}")

    extra = {"classes": data.classes, "strategy": strategy.name, "image_size": config.image_size}
    callbacks = _callbacks(config, run_dir, extra, quiet)
    trainer = Trainer(model, strategy, config, train_batches, val_batches, run_dir, callbacks)
    if resume:
        trainer.resume()
        echo(f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    with interruptible(trainer):
        state = trainer.fit()
    if state.best_epoch:
        kept = state.history[state.best_epoch - 1]
        echo(
            f"stopped: {state.stop_reason}; kept epoch {state.best_epoch}: validation loss {kept['val_loss']:.4f} "
            f"(lowest {state.best_metric:.4f}), accuracy {kept['val_accuracy']:.4f}"
        )

    model.load_state_dict(load_file(run_dir / WEIGHTS_FILE))
    plot_curves(state.history, run_dir / "curves.png")
    scores = _evaluate(model, data, config, device, run_dir)
    echo(f"{scores['split']}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}")
    summary = {
        "strategy": strategy.name,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.elapsed, 2),
        "input": note,
        "skipped": [{"path": s.path, "reason": s.reason} for s in data.skipped],
        "accuracy": scores["accuracy"],
        "evaluated_on": scores["split"],
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return FitResult(run_dir, model, data.classes, config, strategy, state, scores, size)
