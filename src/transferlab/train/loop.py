"""One small training loop. Everything optional (checkpoints, early stopping, logging, progress, time budget)
is a callback; the loop itself only steps, validates and asks the callbacks whether to stop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlab.config import FitConfig
from transferlab.distributed import World
from transferlab.errors import Interrupted, TransferlabError
from transferlab.inference import evaluating, without_batchnorm
from transferlab.model import TransferModel
from transferlab.rundir import RunDir
from transferlab.strategies import Strategy
from transferlab.train.averaging import WeightAverage
from transferlab.train.batches import Batch, Batches, step_seed
from transferlab.train.batchnorm import recalibrate_batchnorm
from transferlab.train.frozen_norm import Frozen, frozen_norms
from transferlab.train.mixing import mix_batch
from transferlab.train.objectives import CrossEntropy, Objective
from transferlab.train.precision import Precision
from transferlab.train.readback import StepValues
from transferlab.train.schedules import lr_factor
from transferlab.train.state import TrainState, load_checkpoint, save_checkpoint


class TrainingDiverged(TransferlabError):
    """The loss became NaN or infinite."""


class Callback:
    """Hooks into the loop; override what you need. Set `trainer.stop_reason` to end training cleanly.

    Callbacks share what they learn through `trainer.state`, the part of the loop that a resumed run restores.
    One that reads what another writes there names that one in `after`, and the Trainer refuses a list in
    which it does not come later: the order is stated, and checked, not remembered.
    """

    after: tuple[type[Callback], ...] = ()

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimizer step; `trainer.state` is that step's."""

    def on_loss(self, trainer: Trainer, loss: float, parts: dict[str, float]) -> None:
        """A finished step's loss and the parts its objective logs. They arrive a step late, since reading them
        at once would stall a GPU (train/readback.py), so `trainer.state` has moved on; every step's arrive
        before its epoch ends."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def _in_order(callbacks: list[Callback]) -> list[Callback]:
    """`callbacks`, refused when one comes before a callback it reads from (see Callback.after)."""
    for index, callback in enumerate(callbacks):
        for needed in callback.after:
            if not any(isinstance(earlier, needed) for earlier in callbacks[:index]):
                raise ValueError(f"{type(callback).__name__} reads what {needed.__name__} writes: put one before it")
    return callbacks


def _split_off_flat(group: dict) -> list[dict]:
    """`group` as its matrices and kernels, then its one-dimensional parameters without weight decay."""
    flat = [p for p in group["params"] if p.ndim <= 1]
    if not flat or group.get("weight_decay") == 0.0:
        return [group]
    shaped = [p for p in group["params"] if p.ndim > 1]
    parts = [group | {"params": shaped}, group | {"params": flat, "weight_decay": 0.0, "name": f"{group['name']}/flat"}]
    return [part for part in parts if part["params"]]


def objective_groups(objective: Objective, lr: float) -> list[dict]:
    """The objective's own parameters (learned task weights, a discriminator), if it has any, at the head's
    rate and without weight decay: decay would pull them towards zero, which for a log-variance means a bias."""
    parameters = [p for p in objective.parameters() if p.requires_grad]
    return [{"params": parameters, "lr": lr, "weight_decay": 0.0, "name": "objective"}] if parameters else []


def build_optimizer(config: FitConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW or SGD over `groups`. Unless `decay_biases_and_norms`, each group's biases and normalisation
    weights (every parameter of one dimension, as timm's optimizer factory tells them) are kept out of weight
    decay: decay pulls a BatchNorm scale towards zero, which is a change of the features, not a regulariser."""
    if not config.decay_biases_and_norms:
        groups = [part for group in groups for part in _split_off_flat(group)]
    for group in groups:
        group["initial_lr"] = group["lr"]
    fused = _fusable(groups)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True, fused=fused
        )
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=fused)


def _fusable(groups: list[dict]) -> bool:
    """Whether torch's fused kernel can run the update: one pass over all parameters rather than a handful of
    tensor ops per parameter. On this project's CPU it cut AdamW's step over Lite0 from 8.6 to 2.7 ms
    (benchmarks/README.md, "AdamW's fused update"); CPU and CUDA floating-point tensors have it."""
    parameters = [p for group in groups for p in group["params"]]
    return bool(parameters) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)


@torch.no_grad()
def validate(model: TransferModel, batches: Batches) -> dict[str, float]:
    """Mean cross-entropy, its standard error, and accuracy of `model` (in eval mode) over `batches`; and the
    same loss once the logits are divided by the temperature that minimises it (`val_loss_tempered`).

    With several heads (tasks or domains), each head's are reported as `val_loss/NAME` and `val_accuracy/NAME`,
    over the images labelled for it, and `val_loss`, `val_accuracy` are their means over heads: what the best
    checkpoint and early stopping read. The mean's standard error treats the heads' as independent.
    """
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in model.head_names}
    labels: dict[str, list[torch.Tensor]] = {name: [] for name in model.head_names}
    fast: TransferModel | None = None
    with evaluating(model):
        for batch in batches.batches():
            fast = fast or without_batchnorm(model, "outputs_from", batch.x[:1], batch.start, batch.domain)
            outputs = fast.outputs_from(batch.x, batch.start, batch.domain)
            for (name, head_logits), head_labels in zip(outputs.logits.items(), batch.targets.T, strict=True):
                labelled = head_labels >= 0
                logits[name].append(head_logits[labelled])
                labels[name].append(head_labels[labelled])
    heads = {name: _head_metrics(logits[name], labels[name]) for name in model.head_names}
    if len(heads) == 1:
        return next(iter(heads.values()))
    metrics = {key: sum(h[key] for h in heads.values()) / len(heads) for key in (*_LOSSES, "val_accuracy")}
    for key in _LOSSES:
        metrics[f"{key}_se"] = sum(h[f"{key}_se"] ** 2 for h in heads.values()) ** 0.5 / len(heads)
    for name, head in heads.items():
        metrics |= {f"val_loss/{name}": head["val_loss"], f"val_accuracy/{name}": head["val_accuracy"]}
    return metrics


_LOSSES = ("val_loss", "val_loss_tempered")


def _head_metrics(logits: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float]:
    every = torch.cat(logits) if logits else torch.zeros(0, 1)
    truth = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    count = len(truth)
    metrics = {"val_accuracy": int((every.argmax(1) == truth).sum()) / max(1, count)}
    for key, scale in (("val_loss", 1.0), ("val_loss_tempered", _inverse_temperature(every, truth))):
        losses = nn.functional.cross_entropy(every * scale, truth, reduction="none").double()
        metrics[key] = losses.sum().item() / max(1, count)
        metrics[f"{key}_se"] = losses.std().item() / count**0.5 if count > 1 else 0.0
    return metrics


def _inverse_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 40) -> float:
    """The factor of the logits that minimises their mean cross-entropy (temperature scaling, Guo et al. 2017),
    between 1/20 and 20. The loss is convex in the factor, so a golden-section search over its logarithm finds
    it; hand-written because it is ten lines, and a solver would be a dependency for one number."""
    if len(labels) == 0:
        return 1.0

    def loss(log_scale: float) -> float:
        return nn.functional.cross_entropy(logits * math.exp(log_scale), labels).item()

    low, high = -math.log(20), math.log(20)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(iterations):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if loss(left) < loss(right):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


class _Step(nn.Module):
    """A training step's forward pass, the model's outputs and the objective's loss, as one module call: so
    that DistributedDataParallel, which syncs gradients only through its own __call__, sees every step, and
    syncs the objective's own parameters (task weights, a discriminator) with the model's."""

    def __init__(self, model: TransferModel, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.frozen_norms: Callable[[], Frozen] | None = None  # read off the first batch (train/frozen_norm.py)

    def forward(self, batch: Batch, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.frozen_norms is None:
            x, start, domain = batch.x[:1], batch.start, batch.domain
            self.frozen_norms = frozen_norms(self.model, lambda: self.model.outputs_from(x, start, domain), x.device)
        with self.frozen_norms():
            outputs = self.model.outputs_from(batch.x, batch.start, batch.domain)
        return self.objective(outputs, batch, progress)


class Trainer:
    """Fits `model` with `strategy` on `train`, validating on `val` after each epoch (None: no held-out images,
    as in a refit), minimising `objective` (default: cross-entropy of the one head, with the config's label
    smoothing). The resumable checkpoint is `checkpoint` (default: the run dir's).

    In a `world` of several processes (torchrun), each holds a replica, `train` is this rank's share of every
    batch (batches.shard), DistributedDataParallel averages the gradients, and only rank 0 writes: its
    callbacks are the writing ones, and the resumable checkpoint is its alone.
    """

    def __init__(
        self,
        model: TransferModel,
        strategy: Strategy,
        config: FitConfig,
        train: Batches,
        val: Batches | None,
        run_dir: Path,
        callbacks: Sequence[Callback] = (),
        objective: Objective | None = None,
        world: World | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.config = config
        self.train = train
        self.val = val
        self.run_dir = Path(run_dir)
        self.checkpoint = checkpoint or RunDir(self.run_dir).checkpoint
        self.callbacks = _in_order(list(callbacks))
        strategy.freeze(model)
        self.objective = objective or CrossEntropy(config.label_smoothing)
        self.world = world or World()
        step = _Step(model, self.objective)
        # Before anything copies the weights (the moving average): DDP starts every rank from rank 0's. A
        # head that a batch does not reach (another domain's, another task's) leaves gradients unused.
        several = len(model.head_names) > 1
        self._forward = DistributedDataParallel(step, find_unused_parameters=several) if self.world.active else step
        if config.epochs is None or config.lr is None:
            raise ValueError("the Trainer takes a resolved config (defaults.resolve): epochs and lr must be set")
        self.epochs: int = config.epochs
        self.optimizer = build_optimizer(
            config, strategy.param_groups(model, config.lr) + objective_groups(self.objective, config.lr)
        )
        horizon = (config.ema_epochs or 0.0) * len(train)  # unset in a config resolve() has not seen: none
        self.average = WeightAverage(model, horizon) if horizon > 0 else None
        self.precision = Precision(config.precision, str(next(model.parameters()).device))
        self.state = TrainState()
        self.stop_reason: str | None = None
        self.interrupted = False
        self._started = time.monotonic()
        self._unread: StepValues | None = None  # the last step's loss, not yet read (train/readback.py)

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
        self.state.stop_reason = self.stop_reason  # a run that had stopped (early, at its time) trains no further
        self._started = time.monotonic()
        if not self.world.is_main:
            return
        save_checkpoint(
            self.checkpoint,
            self.model,
            self.optimizer,
            self.state,
            self._averaged,
            self.objective,
            self.precision.scaler,
        )

    def resume(self) -> None:
        """Continue from the run dir's resumable checkpoint: weights, their average, the objective's own
        parameters, optimizer, the float16 loss scale, loop state."""
        self.state = load_checkpoint(
            self.checkpoint,
            self.model,
            self.optimizer,
            self._averaged,
            self.objective,
            self.precision.scaler,
        )
        self.epochs = self.state.epochs or self.epochs
        self.stop_reason = self.state.stop_reason

    @property
    def total_steps(self) -> int:
        return self.epochs * len(self.train)

    def fit(self) -> TrainState:
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.state.epoch < self.epochs and self.stop_reason is None:
            self._run_epoch()
        self.state.stop_reason = self.stop_reason or "completed all epochs"
        self.state.elapsed, self._started = self.elapsed, time.monotonic()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.state

    def _run_epoch(self) -> None:
        state, config = self.state, self.config
        self.strategy.set_train_mode(self.model)
        for batch in self.train.batches(config.seed, state.epoch, state.step):
            self._step(batch)
            if self.interrupted:
                self._report_last_step()
                self.save_resumable()
                raise Interrupted(
                    f"interrupted at epoch {state.epoch + 1}, step {state.step}; "
                    f"resume with: transferlab {'adapt' if self.config.target else 'fit'} --resume {self.run_dir}"
                )
            if self.stop_reason:
                break
        self._report_last_step()
        state.epoch, state.step = state.epoch + 1, 0
        if self.strategy.adapt_batchnorm and self.strategy.trains_backbone(self.model):
            recalibrate_batchnorm(self.eval_model, self.train, self.strategy.num_frozen(self.model))
        self.world.share_buffers(self.eval_model)  # every rank validates the same model, and decides alike
        metrics = {"epoch": state.epoch, **(validate(self.eval_model, self.val) if self.val is not None else {})}
        for callback in self.callbacks:
            callback.on_epoch_end(self, metrics)
        self._agree()

    def _step(self, batch: Batch) -> None:
        state = self.state
        factor = lr_factor(self.config, state.epoch, state.step, len(self.train), self.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        torch.manual_seed(step_seed(self.config.seed, state.epoch, state.step))  # dropout and mixing, reproducibly
        batch = mix_batch(batch, self.config.mix, self.config.mix_alpha)
        with self.precision.autocast():
            loss, parts = self._forward(batch, state.global_step / self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.step(loss, self.optimizer)
        if self.average:
            self.average.update(state.global_step)
        finished, self._unread = self._unread, StepValues.of(loss, parts, state.epoch, state.step)
        state.step += 1
        state.global_step += 1
        for callback in self.callbacks:
            callback.on_step_end(self)
        self._agree(finished)

    def _report_last_step(self) -> None:
        finished, self._unread = self._unread, None
        self._agree(finished)

    def _agree(self, finished: StepValues | None = None) -> None:
        """Every rank stops, is interrupted, or gives up on a diverged loss where any one does (its time limit, a
        Ctrl-C, a NaN), or the others would wait forever for its gradients: one collective for all three, so a
        step costs the ranks one agreement beside DDP's gradients. One process: nothing to agree.

        `finished`: a step's loss, read a step late (train/readback.py), then told to the callbacks. A NaN or
        infinite loss stops the run: its update has reached the weights in memory, but every epoch's end reads
        its last step before anything is validated or saved, so what the run dir keeps is the last good model."""
        loss, parts = finished.read() if finished is not None else (0.0, {})
        diverged, stopping = not math.isfinite(loss), self.stop_reason is not None
        if self.world.active:
            diverged, self.interrupted, stopping = self.world.any(diverged, self.interrupted, stopping)
            if stopping and self.stop_reason is None:
                self.stop_reason = "stopped with another process"
        if finished is None:
            return
        if diverged:
            what = f"loss became {loss}" if not math.isfinite(loss) else "another process's loss became NaN or infinite"
            raise TrainingDiverged(
                f"{what} at epoch {finished.epoch + 1}, step {finished.step + 1}; "
                f"the last good model is kept in {self.run_dir} (try a lower --lr)"
            )
        for callback in self.callbacks:
            callback.on_loss(self, loss, parts)
