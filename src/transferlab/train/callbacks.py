"""The loop's optional behaviours, one callback each."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from transferlab.train.loop import Callback, Trainer

Saver = Callable[[Trainer], None]


class BestCheckpoint(Callback):
    """Keeps the model with the lowest validation loss, saved through `save`; of the models within one standard
    error of the lowest (ESL's one-standard-error rule), the latest: the validation set cannot tell them apart,
    and the latest has trained longer, at a lower learning rate, with a settled moving average of its weights.

    Loss, not accuracy: on a small validation set accuracy moves in coarse steps and a lucky epoch wins. The
    margin is the validation set's own standard error, not a fixed fraction: 200 images are noisy, 20,000 are
    not. The rules compared are in benchmarks/README.md ("Measurements behind the defaults"). `metric` names the
    loss it reads: the validation loss, or another estimate that a callback before it adds (domain
    adaptation's `dev_loss`), beside its standard error as METRIC_se.
    """

    def __init__(self, save: Saver, standard_errors: float = 1.0, metric: str = "val_loss") -> None:
        self.save = save
        self.standard_errors = standard_errors
        self.metric = metric

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.metric not in metrics:
            raise ValueError(f"the best checkpoint reads '{self.metric}', which no callback before it measured")
        state, loss = trainer.state, metrics[self.metric]
        if state.best_metric is None or loss < state.best_metric:
            state.best_metric, state.best_margin = loss, self.standard_errors * metrics[f"{self.metric}_se"]
        if loss <= state.best_metric + state.best_margin:
            state.best_epoch, state.stale_epochs = metrics["epoch"], 0
            self.save(trainer)
        else:
            state.stale_epochs += 1


class FinalCheckpoint(Callback):
    """Saves the model as training leaves it, through `save`: a refit has nothing held out to choose another."""

    def __init__(self, save: Saver) -> None:
        self.save = save

    def on_fit_end(self, trainer: Trainer) -> None:
        self.save(trainer)


class EarlyStopping(Callback):
    """Stops when no epoch has come within BestCheckpoint's margin of the best for `patience` epochs."""

    after = (BestCheckpoint,)  # it reads the stale epochs BestCheckpoint counts

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.state.stale_epochs >= self.patience:
            trainer.stop_reason = f"early stop: no validation gain for {self.patience} epochs"


class StopAfter(Callback):
    """Stops after epoch `epochs` of the run's schedule (the one a refit copies): the schedule's learning rates
    are those of its full length, as they were for the epoch validation chose."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.state.epoch >= self.epochs:
            trainer.stop_reason = f"stopped after epoch {self.epochs}"


class TimeBudget(Callback):
    """Fits the run into `seconds` of training. After each epoch the run's epoch count becomes what the time
    left holds at that epoch's pace (never more than configured), so that the learning-rate schedule anneals
    to its end when the time runs out, rather than being cut off at a high rate. Should an epoch still run
    over, training stops cleanly after the step at which the time is up.

    Under torchrun every rank plans with its own clock, and two clocks a millisecond apart can fall on either
    side of an epoch: rank 0's plan is everyone's, or a rank that planned one epoch more would wait forever for
    the others' gradients."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.mark = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.mark = trainer.elapsed
        self.planned = trainer.config.epochs or trainer.epochs

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        now, done = trainer.elapsed, trainer.state.epoch
        pace, self.mark = now - self.mark, now
        held = done + int((self.seconds - now) // pace) if pace > 0 else trainer.epochs
        fitted = trainer.world.from_main(max(done, min(self.planned, held)))  # a collective: every rank calls it
        if fitted != trainer.epochs:
            trainer.epochs = trainer.state.epochs = fitted  # the state carries it into a resumed run

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.elapsed > self.seconds:
            trainer.stop_reason = f"time limit of {self.seconds:g} s reached"


class MetricsLog(Callback):
    """One JSON line per epoch: epoch, train loss, validation loss and accuracy, learning rate, seconds, and the
    epoch's mean of each part the objective logs (`train/loss/NAME`, `train/weight/NAME`, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.losses: list[float] = []
        self.parts: dict[str, list[float]] = {}

    def on_loss(self, trainer: Trainer, loss: float, parts: dict[str, float]) -> None:
        self.losses.append(loss)
        for name, value in parts.items():
            if not math.isnan(value):  # NaN: not measured on this batch (a task without labels in it)
                self.parts.setdefault(name, []).append(value)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        # On resume, an interrupted epoch's early losses are gone; the mean covers the steps of this session.
        row = {
            **metrics,
            "train_loss": sum(self.losses) / max(1, len(self.losses)),
            **{f"train/{name}": sum(values) / len(values) for name, values in self.parts.items()},
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "seconds": round(trainer.elapsed, 2),
        }
        self.losses, self.parts = [], {}
        trainer.state.history.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


class ResumableCheckpoint(Callback):
    """Writes the resumable checkpoint after every epoch (the loop also writes one on interruption)."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        trainer.save_resumable()


class Progress(Callback):
    """A live bar on a terminal; one plain line per epoch elsewhere (CI, pipes, logs)."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.progress: Any = None
        self.last_parts: dict[str, float] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.progress.start()
            total = trainer.total_steps
            done = trainer.state.epoch * len(trainer.train) + trainer.state.step
            self.task = self.progress.add_task("training", total=total, completed=done, info="")

    def on_loss(self, trainer: Trainer, loss: float, parts: dict[str, float]) -> None:
        self.last_parts = parts  # the epoch line shows the task weights and distances as training left them
        if self.progress is not None:
            info = f"epoch {trainer.state.epoch + 1}/{trainer.epochs} loss {loss:.3f}"
            self.progress.update(self.task, advance=1, info=info)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        line = f"epoch {metrics['epoch']:>3}/{trainer.epochs}  "
        if "val_loss" in metrics:
            line += f"val_acc {metrics['val_accuracy']:.4f}  val_loss {metrics['val_loss']:.4f}  "
        elif trainer.state.history:  # nothing held out (a refit): the training loss MetricsLog measured
            line += f"train_loss {trainer.state.history[-1]['train_loss']:.4f}  "
        line += f"{trainer.elapsed:6.1f}s"
        heads = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("val_accuracy/")}
        if heads:  # several tasks or domains: each one's accuracy, then what the objective logged
            line += "  (" + ", ".join(f"{name} {value:.4f}" for name, value in heads.items()) + ")"
            logged = [f"{k} {v:.3g}" for k, v in self.last_parts.items() if k.startswith(("weight/", "soft/"))]
            line += "".join(f"  {item}" for item in logged)
        line += _adaptation_line(trainer, metrics)
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.progress is not None:
            self.progress.stop()


def _adaptation_line(trainer: Trainer, metrics: dict[str, Any]) -> str:
    """Domain adaptation's epoch means: the source loss, the transfer loss, the discriminator's accuracy
    (0.5: it cannot tell the domains apart); and the measured distance between the domains' features and the
    target loss that DEV estimates."""
    means = trainer.state.history[-1] if trainer.state.history else {}
    shown = {
        "source": means.get("train/loss/source"),
        **{name.removeprefix("train/transfer/"): v for name, v in means.items() if name.startswith("train/transfer/")},
        "disc_acc": means.get("train/domain/accuracy"),
        "A-distance": metrics.get("a_distance"),
        "dev_loss": metrics.get("dev_loss"),
    }
    return "".join(f"  {name} {value:.3f}" for name, value in shown.items() if value is not None)


@contextmanager
def interruptible(trainer: Trainer) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: finish the step, checkpoint, stop. A second Ctrl-C exits at once."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        trainer.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step (Ctrl-C again to quit now)...", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
