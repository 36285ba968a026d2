"""Training a run: the one Trainer over a built `Run`, with the run dir's callbacks (the kept checkpoint, early
stopping, the time budget, the metrics log, the resumable checkpoint)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transferlab.adaptation.monitor import DomainGap
from transferlab.config import FitConfig
from transferlab.fitting.building import Run
from transferlab.model import save_model
from transferlab.rundir import RunDir
from transferlab.train.callbacks import (
    BestCheckpoint,
    EarlyStopping,
    MetricsLog,
    Progress,
    ResumableCheckpoint,
    TimeBudget,
    interruptible,
)
from transferlab.train.loop import Callback, Trainer
from transferlab.train.state import TrainState


def saver(run: Run) -> Callable[[Trainer], None]:
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
    callbacks: list[Callback] = [BestCheckpoint(saver(run), metric=kept_by(config)), EarlyStopping(config.patience)]
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
    state = run_trainer(run, [*_callbacks(run, quiet), *callbacks], resume)
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


def run_trainer(
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
