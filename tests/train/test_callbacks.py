"""The best checkpoint: lowest validation loss, the latest of the models within one standard error of it; the
validation loss, tempered or not; the time budget that fits the run's epochs to the time it is given; and when
the loop tells its callbacks of each step and of its loss; and what the ranks of a torchrun agree on each step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.distributed import World
from transferlab.model import Outputs, TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import Batch
from transferlab.train.callbacks import BestCheckpoint, EarlyStopping, TimeBudget
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Callback, Trainer, TrainingDiverged, validate
from transferlab.train.state import TrainState

LOSSES = [0.60, 0.50, 0.505, 0.52, 0.49, 0.60, 0.70]


@pytest.mark.parametrize(
    ("standard_error", "kept"),
    [
        # 0.505 is within one standard error (0.01) of 0.50: kept, it trained longer; 0.52 is not
        (0.01, [1, 2, 3, 5]),
        # a noisier validation set cannot tell 0.52 from 0.50 either
        (0.05, [1, 2, 3, 4, 5]),
    ],
)
def test_the_latest_model_within_one_standard_error_of_the_lowest_loss_is_kept(standard_error, kept) -> None:
    trainer = SimpleNamespace(state=TrainState(), stop_reason=None)
    saved: list[int] = []
    best = BestCheckpoint(lambda t: saved.append(t.state.best_epoch))
    stop = EarlyStopping(patience=2)
    for epoch, loss in enumerate(LOSSES, start=1):
        metrics = {"epoch": epoch, "val_loss": loss, "val_loss_se": standard_error, "val_accuracy": 0.5}
        for callback in (best, stop):
            callback.on_epoch_end(trainer, metrics)
        if trainer.stop_reason:
            break
    assert saved == kept
    assert trainer.state.best_metric == 0.49 and trainer.state.best_epoch == 5
    assert epoch == 7 and "2 epochs" in trainer.stop_reason  # two epochs outside the margin in a row


class _Logits(torch.nn.Module):
    """A 'model' whose outputs are its inputs: validation's arithmetic, checked on known logits."""

    head_names = ("label",)

    def outputs_from(self, x: torch.Tensor, start: int, domain: str | None = None) -> Outputs:
        return Outputs({"label": x}, x)


def test_validation_reports_the_standard_error_of_its_mean_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(50, 3), torch.randint(0, 3, (50,))
    batches = SimpleNamespace(batches=lambda: [Batch(logits[:32], labels[:32]), Batch(logits[32:], labels[32:])])
    metrics = validate(_Logits(), batches)
    per_image = torch.nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    assert metrics["val_loss"] == pytest.approx(per_image.mean(), rel=1e-6)
    assert metrics["val_loss_se"] == pytest.approx(per_image.std(ddof=1) / np.sqrt(50), rel=1e-5)
    assert metrics["val_accuracy"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def test_the_tempered_loss_takes_out_overconfidence_and_leaves_a_calibrated_model_as_it_is() -> None:
    torch.manual_seed(0)
    calibrated = 2 * torch.randn(4000, 5)
    labels = torch.distributions.Categorical(logits=calibrated).sample()  # drawn as the logits say: calibrated

    def metrics(logits: torch.Tensor) -> dict[str, float]:
        return validate(_Logits(), SimpleNamespace(batches=lambda: [Batch(logits, labels)]))

    honest, overconfident = metrics(calibrated), metrics(3 * calibrated)
    assert honest["val_loss_tempered"] == pytest.approx(honest["val_loss"], rel=2e-3)
    assert overconfident["val_loss"] > 1.5 * honest["val_loss"]  # the same ranking, three times too sure
    assert overconfident["val_loss_tempered"] == pytest.approx(honest["val_loss_tempered"], rel=1e-6)
    assert overconfident["val_loss_tempered_se"] == pytest.approx(honest["val_loss_tempered_se"], rel=1e-3)


def test_the_trainer_refuses_early_stopping_before_the_checkpoint_it_reads_from() -> None:
    from transferlab.train.loop import _in_order

    best, stop = BestCheckpoint(lambda trainer: None), EarlyStopping(patience=2)
    assert _in_order([best, stop]) == [best, stop]
    with pytest.raises(ValueError, match="EarlyStopping reads what BestCheckpoint writes"):
        _in_order([stop, best])


def test_a_time_limit_fits_the_epoch_count_to_the_pace_and_the_state_carries_it() -> None:
    config = SimpleNamespace(epochs=20)
    trainer = SimpleNamespace(
        state=TrainState(), epochs=20, config=config, elapsed=0.0, stop_reason=None, world=World()
    )
    budget = TimeBudget(100.0)
    budget.on_fit_start(trainer)
    plans = []
    for epoch, elapsed in enumerate([12.0, 21.0, 30.0], start=1):  # a slow first epoch, then 9 s each
        trainer.state.epoch, trainer.elapsed = epoch, elapsed
        budget.on_epoch_end(trainer, {})
        plans.append(trainer.epochs)
    assert plans == [8, 10, 10]  # 1 + 88 // 12, then 2 + 79 // 9: as many epochs as the time holds
    assert trainer.state.epochs == 10  # saved with the state, so a resumed run keeps the same schedule
    trainer.state.epoch, trainer.elapsed = 4, 33.0  # a fast machine is never given more than configured
    budget.on_epoch_end(trainer, {})
    assert trainer.epochs == 20 and trainer.stop_reason is None
    trainer.elapsed = 100.5
    budget.on_step_end(trainer)
    assert trainer.stop_reason == "time limit of 100 s reached"


@dataclass(frozen=True)
class RankOne(World):
    """Rank 1 of two, whose rank 0 planned `main_plan` epochs."""

    main_plan: int = 0

    def from_main(self, value: Any) -> Any:
        return self.main_plan


def test_under_torchrun_every_rank_keeps_rank_0s_epoch_plan() -> None:
    # This rank's clock holds 10 epochs (1 + 90.2 // 9.8), rank 0's a hair less: the plan must be rank 0's, or
    # this rank would start an eleventh epoch that rank 0 never joins.
    trainer = SimpleNamespace(
        state=TrainState(epoch=1),
        epochs=20,
        config=SimpleNamespace(epochs=20),
        elapsed=0.0,
        world=RankOne(rank=1, size=2, main_plan=9),
    )
    budget = TimeBudget(100.0)
    budget.on_fit_start(trainer)
    trainer.elapsed = 9.8
    budget.on_epoch_end(trainer, {})
    assert trainer.epochs == trainer.state.epochs == 9


class Tally(Callback):
    """What the loop tells its callbacks, and when."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.by_epoch: list[tuple[int, int]] = []  # (steps told, losses told) when each epoch ended

    def on_step_end(self, trainer: Trainer) -> None:
        self.steps.append(trainer.state.global_step)

    def on_loss(self, trainer: Trainer, loss: float, parts: dict[str, float]) -> None:
        self.losses.append(loss)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.by_epoch.append((len(self.steps), len(self.losses)))


def test_each_step_is_told_at_its_end_and_its_loss_before_its_epoch_ends(digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    config = FitConfig(strategy="full", epochs=2, lr=1e-2, image_size=32, batch_size=16, augment="none", cached_views=0)
    train, val, _ = make_batches(model, parse_strategy("full"), config, prepare(load_source(digits), 32), "cpu")
    tally = Tally()
    Trainer(model, parse_strategy("full"), config, train, val, tmp_path, [tally]).fit()
    steps = len(train)
    assert tally.steps == list(range(1, 2 * steps + 1))  # each step's own state, once
    assert tally.by_epoch == [(steps, steps), (2 * steps, 2 * steps)]  # read a step late, but within the epoch
    assert all(math.isfinite(loss) and loss > 0 for loss in tally.losses)


@dataclass(frozen=True)
class RankZero(World):
    """Rank 0 of two without a process group: each agreement is counted, and the other rank's flags for the
    n-th one (`theirs[n]`) are raised with this rank's."""

    theirs: dict[int, tuple[bool, ...]] = field(default_factory=dict)
    agreements: list[tuple[bool, ...]] = field(default_factory=list)

    def any(self, *flags: bool) -> list[bool]:
        self.agreements.append(flags)
        other = self.theirs.get(len(self.agreements), (False,) * len(flags))
        return [mine or its for mine, its in zip(flags, other, strict=True)]

    def from_main(self, value: Any) -> Any:
        return value

    def share_buffers(self, module: torch.nn.Module) -> None:
        pass


def _two_rank_trainer(digits: Any, tmp_path: Any, world: RankZero) -> Trainer:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    config = FitConfig(strategy="full", epochs=2, lr=1e-2, image_size=32, batch_size=16, augment="none", cached_views=0)
    train, val, _ = make_batches(model, parse_strategy("full"), config, prepare(load_source(digits), 32), "cpu")
    trainer = Trainer(model, parse_strategy("full"), config, train, val, tmp_path)
    trainer.world = world  # after DDP would have wrapped the step: this test has no process group
    return trainer


def test_the_ranks_agree_once_a_step_on_a_diverged_loss_a_stop_and_an_interruption(digits, tmp_path) -> None:
    world = RankZero(rank=0, size=2)
    trainer = _two_rank_trainer(digits, tmp_path, world)
    trainer.fit()
    steps = len(trainer.train)
    # one collective a step beside DDP's gradients; at each epoch's end, one for its last loss, one after validation
    assert len(world.agreements) == 2 * steps + 2 * 2
    assert all(len(flags) == 3 for flags in world.agreements)  # diverged, interrupted, stopping


def test_a_loss_that_diverged_on_another_rank_stops_this_one(digits, tmp_path) -> None:
    world = RankZero(rank=0, size=2, theirs={3: (True, False, False)})
    trainer = _two_rank_trainer(digits, tmp_path, world)
    with pytest.raises(TrainingDiverged, match=r"another process's loss became NaN or infinite at epoch 1, step 2"):
        trainer.fit()
