"""The fit pipeline: source → samples → decoded cache → batches → TransferModel → Trainer → run dir."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Dataset, PreparedData, load_source, prepare
from transferlab.data.decode import native_size
from transferlab.data.transforms import Normalizer
from transferlab.defaults import DataFacts, resolve
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
from transferlab.train.state import CHECKPOINT_FILE, TrainState, load_checkpoint
from transferlab.train.warmup import warm_start_head

log = logging.getLogger("transferlab")

Source = str | Path | tuple


@dataclass
class FitResult:
    run_dir: Path
    model: TransferModel
    classes: list[str]
    config: FitConfig
    strategy: Strategy
    state: TrainState
    test_scores: dict[str, Any] | None


def data_facts(dataset: Dataset) -> DataFacts:
    train = dataset.splits["train"]
    counts = [int((train.labels == i).sum()) for i in range(len(dataset.classes))]
    return DataFacts(per_class=min(counts), native_size=native_size(train))


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


def _callbacks(model: TransferModel, config: FitConfig, run_dir: Path, extra: dict, quiet: bool) -> list[Callback]:
    callbacks: list[Callback] = [
        MetricsLog(run_dir / "metrics.jsonl"),
        BestCheckpoint(lambda _trainer: save_model(model, run_dir, extra)),
        EarlyStopping(config.patience),
        ResumableCheckpoint(),
    ]
    if config.time_limit:
        callbacks.append(TimeBudget(config.time_limit))
    if not quiet:
        callbacks.append(Progress())
    return callbacks


def _evaluate_test(model: TransferModel, data: PreparedData, config: FitConfig, device: str, run_dir: Path) -> dict:
    test = data.splits["test"]
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
    probs = probabilities(model, test.images, normalizer, device=device)
    scores = score(probs, test.labels, data.classes, [str(p) for p in test.paths] if test.paths else None)
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
    strategy = parse_strategy(config.strategy)
    backbone = create_backbone(config.backbone, pretrained=strategy.pretrained, weights=config.weights)
    config = resolve(config, strategy, data_facts(dataset), backbone.preprocessing.input_size)
    if isinstance(source, str | Path):
        config = config.updated(source=str(source))
    data = prepare(dataset, config.image_size, interpolation=backbone.preprocessing.interpolation)
    model = TransferModel(backbone, len(data.classes)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    strategy.check(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        config.save(run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    counts = {name: len(split.labels) for name, split in data.splits.items()}
    echo(f"data: {dataset.name}, {len(data.classes)} classes, {counts}, {len(data.skipped)} skipped")
    echo(f"backbone: {backbone.name} (weights: {backbone.weights_source}), image size {config.image_size}")
    echo(f"strategy: {strategy.name}: {strategy.describe(model)}")
    if strategy.warm_start and strategy.trains_backbone(model) and not resume:
        accuracy = warm_start_head(model, config, data, device, run_dir)
        echo(f"head warm start on frozen features: validation accuracy {accuracy:.4f}")
    train_batches, val_batches, note = make_batches(model, strategy, config, data, device)
    echo(f"input: {note}")

    extra = {"classes": data.classes, "strategy": strategy.name, "image_size": config.image_size}
    callbacks = _callbacks(model, config, run_dir, extra, quiet)
    trainer = Trainer(model, strategy, config, train_batches, val_batches, run_dir, callbacks)
    if resume:
        trainer.state = load_checkpoint(run_dir / CHECKPOINT_FILE, model, trainer.optimizer)
        echo(f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    with interruptible(trainer):
        state = trainer.fit()
    echo(f"stopped: {state.stop_reason}; best validation accuracy {state.best_metric:.4f} at epoch {state.best_epoch}")

    model.load_state_dict(load_file(run_dir / WEIGHTS_FILE))
    plot_curves(state.history, run_dir / "curves.png")
    test_scores = _evaluate_test(model, data, config, device, run_dir) if "test" in data.splits else None
    if test_scores:
        echo(f"test: accuracy {test_scores['accuracy']:.4f}, macro-F1 {test_scores['macro_f1']:.4f}")
    summary = {
        "strategy": strategy.name,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.elapsed, 2),
        "input": note,
        "skipped": [{"path": s.path, "reason": s.reason} for s in data.skipped],
        "test_accuracy": test_scores["accuracy"] if test_scores else None,
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return FitResult(run_dir, model, data.classes, config, strategy, state, test_scores)
