"""One small training loop. Everything optional (checkpoints, early stopping, logging, progress, time budget)
is a callback; the loop itself only steps, validates and asks the callbacks whether to stop."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.config import FitConfig
from transferlab.errors import Interrupted, TransferlabError
from transferlab.model import TransferModel
from transferlab.strategies import Strategy
from transferlab.train.averaging import WeightAverage
from transferlab.train.batches import Batches, step_seed
from transferlab.train.batchnorm import recalibrate_batchnorm
from transferlab.train.schedules import lr_factor
from transferlab.train.state import CHECKPOINT_FILE, TrainState, load_checkpoint, save_checkpoint


class TrainingDiverged(TransferlabError):
    """The loss became NaN or infinite."""


class Callback:
    """Hooks into the loop; override what you need. Set `trainer.stop_reason` to end training cleanly."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def build_optimizer(config: FitConfig, groups: list[dict]) -> torch.optim.Optimizer:
    for group in groups:
        group["initial_lr"] = group["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


@torch.no_grad()
def validate(model: TransferModel, batches: Batches) -> dict[str, float]:
    """Mean cross-entropy, its standard error, and accuracy of `model` (in eval mode) over `batches`."""
    model.eval()
    losses, correct = [], 0
    for x, y in batches.batches():
        logits = model.forward_from(x, batches.start_stage)
        losses.append(nn.functional.cross_entropy(logits, y, reduction="none").double())
        correct += int((logits.argmax(1) == y).sum())
    every = torch.cat(losses) if losses else torch.zeros(0, dtype=torch.float64)
    count = len(every)
    return {
        "val_loss": every.sum().item() / max(1, count),
        "val_loss_se": every.std().item() / count**0.5 if count > 1 else 0.0,
        "val_accuracy": correct / max(1, count),
    }


class Trainer:
    """Fits `model` with `strategy` on `train`, validating on `val` after each epoch."""

    def __init__(
        self,
        model: TransferModel,
        strategy: Strategy,
        config: FitConfig,
        train: Batches,
        val: Batches,
        run_dir: Path,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.config = config
        self.train = train
        self.val = val
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        strategy.freeze(model)
        self.optimizer = build_optimizer(config, strategy.param_groups(model, config.lr or 1e-3))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        horizon = config.ema_epochs * len(train)
        self.average = WeightAverage(model, horizon) if horizon > 0 else None
        self.state = TrainState()
        self.stop_reason: str | None = None
        self.interrupted = False
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Training seconds, counting earlier sessions of a resumed run."""
        return self.state.elapsed + time.monotonic() - self._started

    @property
    def eval_model(self) -> TransferModel:
        """The model that is validated and kept: the weights' moving average, or the weights themselves."""
        return self.model if self._averaged is None else self._averaged

    @property
    def _averaged(self) -> TransferModel | None:
        return self.average.model if self.average else None

    def save_resumable(self) -> None:
        self.state.elapsed = self.elapsed
        self._started = time.monotonic()
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, self.model, self.optimizer, self.state, self._averaged)

    def resume(self) -> None:
        """Continue from the run dir's resumable checkpoint: weights, their average, optimizer, loop state."""
        self.state = load_checkpoint(self.run_dir / CHECKPOINT_FILE, self.model, self.optimizer, self._averaged)

    def fit(self) -> TrainState:
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.state.epoch < (self.config.epochs or 1) and self.stop_reason is None:
            self._run_epoch()
        self.state.stop_reason = self.stop_reason or "completed all epochs"
        self.state.elapsed, self._started = self.elapsed, time.monotonic()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.state

    def _run_epoch(self) -> None:
        state, config = self.state, self.config
        self.strategy.set_train_mode(self.model)
        for x, y in self.train.batches(config.seed, state.epoch, state.step):
            self._step(x, y)
            if self.interrupted:
                self.save_resumable()
                raise Interrupted(
                    f"interrupted at epoch {state.epoch + 1}, step {state.step}; "
                    f"resume with: transferlab fit --resume {self.run_dir}"
                )
            if self.stop_reason:
                break
        state.epoch, state.step = state.epoch + 1, 0
        if self.strategy.adapt_batchnorm and self.strategy.trains_backbone(self.model):
            recalibrate_batchnorm(self.eval_model, self.train, self.strategy.num_frozen(self.model))
        metrics = {"epoch": state.epoch, **validate(self.eval_model, self.val)}
        for callback in self.callbacks:
            callback.on_epoch_end(self, metrics)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        state = self.state
        factor = lr_factor(self.config, state.epoch, state.step, len(self.train))
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        torch.manual_seed(step_seed(self.config.seed, state.epoch, state.step))  # dropout, reproducibly
        loss = self.criterion(self.model.forward_from(x, self.train.start_stage), y)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {state.epoch + 1}, step {state.step + 1}; "
                f"the last good model is kept in {self.run_dir} (try a lower --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average:
            self.average.update(state.global_step)
        state.step += 1
        state.global_step += 1
        for callback in self.callbacks:
            callback.on_step_end(self, loss.item())
