"""The whole fit pipeline on real data (digits) and a tiny backbone: run dir, resume, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY, InterruptAt
from transferlab.config import FitConfig
from transferlab.errors import Interrupted
from transferlab.fitting import build_run, fit, train_run
from transferlab.model import Outputs
from transferlab.train.batches import Batch
from transferlab.train.callbacks import ResumableCheckpoint, StopAfter
from transferlab.train.loop import Callback, Trainer, TrainingDiverged
from transferlab.train.objectives import CrossEntropy


def _config(weights: Path, **changes) -> FitConfig:
    settings = {
        "backbone": TINY,
        "weights": str(weights),
        "image_size": 32,
        "epochs": 3,
        "per_class": 40,
        "batch_size": 16,
    }
    return FitConfig(**(settings | changes))


def _epochs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_writes_a_self_describing_run_dir(digits, tiny_weights, tmp_path) -> None:
    result = fit(digits, _config(tiny_weights, strategy="partial:2"), tmp_path / "run", quiet=True)
    run = result.run_dir
    for name in (
        "model.safetensors",
        "model.json",
        "config.yaml",
        "metrics.jsonl",
        "curves.png",
        "summary.json",
        "data.json",
        "report.html",
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == {"label": ["0", "1", "2"]} and meta["heads"] == {"label": 3}
    assert meta["strategy"] == "partial:2" and meta["image_size"] == 32
    assert meta["test_time_flip"] is True  # trained with flips (augment auto: strong below 50 per class)
    assert len(_epochs(run)) == 3
    saved = FitConfig.load(run / "config.yaml")
    assert saved.epochs == 3 and saved.precision == "32"  # `auto` recorded as what it chose: float32 on a CPU
    # no pickle anywhere: every binary file is safetensors
    assert all(p.suffix in {".safetensors", ".json", ".yaml", ".jsonl", ".png", ".html"} for p in run.iterdir())
    # digits are easy: even 3 epochs of a tiny random-init network on 120 images beat chance (33%) clearly
    assert result.state.history[result.state.best_epoch - 1]["val_accuracy"] > 0.6


@pytest.mark.parametrize("mix", ["none", "cutmix"])
def test_resume_after_interruption_equals_an_uninterrupted_run(digits, tiny_weights, tmp_path, mix) -> None:
    config = _config(tiny_weights, strategy="full", augment="light", mix=mix)
    whole = fit(digits, config, tmp_path / "whole", quiet=True)

    run = build_run(digits, config, tmp_path / "parted", echo=lambda _: None)
    with pytest.raises(Interrupted, match="--resume"):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 2)])  # in the middle of epoch two
    assert (tmp_path / "parted" / "checkpoint.safetensors").is_file()

    # the in-memory source is not recorded in config.yaml, so pass it again
    resumed = fit(digits, config, tmp_path / "parted", quiet=True, resume=True)
    assert [r["val_accuracy"] for r in _epochs(tmp_path / "parted")] == [
        r["val_accuracy"] for r in _epochs(tmp_path / "whole")
    ]
    assert resumed.state.best_metric == whole.state.best_metric
    final_a, final_b = (
        load_file(tmp_path / "whole/model.safetensors"),
        load_file(tmp_path / "parted/model.safetensors"),
    )
    assert all((final_a[k] == final_b[k]).all() for k in final_a)


class FittedTo(Callback):
    """What TimeBudget does once the pace is known: the run's schedule cut to `epochs`, carried by its state."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_fit_start(self, trainer: Trainer) -> None:
        trainer.epochs = trainer.state.epochs = self.epochs


def test_a_resumed_run_keeps_the_epoch_count_its_time_limit_fitted(digits, tiny_weights, tmp_path) -> None:
    """Resumed, a run anneals on the schedule its time limit fitted (2 epochs here), not the configured one (3)."""
    run = build_run(digits, _config(tiny_weights, strategy="head"), tmp_path, echo=lambda _: None)

    def trainer(*callbacks: Callback) -> Trainer:
        return Trainer(run.model, run.strategy, run.config, run.train, run.val, tmp_path, list(callbacks))

    with pytest.raises(Interrupted):
        trainer(FittedTo(2), ResumableCheckpoint(), InterruptAt(len(run.train) + 1)).fit()  # early in epoch two
    resumed = trainer(ResumableCheckpoint())
    resumed.resume()
    assert resumed.epochs == 2
    assert resumed.fit().epoch == 2


def test_a_run_that_had_stopped_trains_no_further_when_resumed(digits, tiny_weights, tmp_path) -> None:
    run = build_run(digits, _config(tiny_weights, strategy="head"), tmp_path, echo=lambda _: None)

    def trainer(*callbacks: Callback) -> Trainer:
        return Trainer(run.model, run.strategy, run.config, run.train, run.val, tmp_path, list(callbacks))

    stopped = trainer(StopAfter(1), ResumableCheckpoint())  # say, stopped early after the first of 3 epochs
    assert stopped.fit().epoch == 1
    resumed = trainer(ResumableCheckpoint())  # killed while scoring, then resumed
    resumed.resume()
    state = resumed.fit()
    assert state.epoch == 1 and state.global_step == len(run.train) and state.stop_reason == "stopped after epoch 1"


def test_same_seed_same_metrics_and_another_seed_differs(digits, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="head", epochs=2)
    runs = [fit(digits, config.updated(seed=s), tmp_path / f"r{i}", quiet=True) for i, s in enumerate((1, 1, 2))]
    losses = [[r["val_loss"] for r in _epochs(run.run_dir)] for run in runs]
    assert losses[0] == losses[1] != losses[2]


def test_fit_leaves_the_callers_random_state_as_it_found_it(digits, tiny_weights, tmp_path) -> None:
    torch.manual_seed(1234)
    without_fit = torch.rand(4)
    torch.manual_seed(1234)
    # the advisor (auto) and a refit seed the generator too
    fit(digits, _config(tiny_weights, strategy="auto", epochs=1, refit=True), tmp_path / "run", quiet=True)
    assert torch.equal(torch.rand(4), without_fit)


def test_keep_by_tempered_loss_keeps_the_checkpoint_by_the_temperature_scaled_loss(digits, tiny_weights, tmp_path):
    result = fit(digits, _config(tiny_weights, strategy="head", keep_by="tempered_loss"), tmp_path, quiet=True)
    rows = _epochs(tmp_path)
    assert result.state.best_metric == min(row["val_loss_tempered"] for row in rows)
    assert all(row["val_loss_tempered"] <= row["val_loss"] + 1e-9 for row in rows)  # a factor of 1 is a candidate


class RecordingLoss(CrossEntropy):
    """Cross-entropy that keeps the share of each batch it was given (None for an unmixed one)."""

    def __init__(self) -> None:
        super().__init__()
        self.shares: list[float | None] = []

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, dict]:
        self.shares.append(None if batch.mix is None else batch.mix.share)
        return super().forward(outputs, batch, progress)


def test_mixup_reaches_every_training_step(digits, tiny_weights, tmp_path) -> None:
    run = build_run(digits, _config(tiny_weights, strategy="full", epochs=1, mix="mixup"), tmp_path, echo=print)
    run.objective = RecordingLoss()
    train_run(run, quiet=True)
    shares = run.objective.shares
    assert len(shares) == len(run.train) and None not in shares
    assert len(set(shares)) == len(shares)  # a fresh share each step


class DivergingLoss(CrossEntropy):
    """Cross-entropy until `after` steps have passed, NaN from then on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, dict]:
        self.calls += 1
        loss, parts = super().forward(outputs, batch, progress)
        return (loss * float("nan") if self.calls > self.after else loss), parts


@pytest.mark.parametrize("after", [12, 11])  # 6 steps an epoch: NaN from the first step of epoch 3, or the last of 2
def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_model(digits, tiny_weights, tmp_path, after):
    run = build_run(digits, _config(tiny_weights, strategy="head", epochs=10), tmp_path / "run", echo=lambda _: None)
    assert len(run.train) == 6
    run.objective = DivergingLoss(after=after)
    with pytest.raises(TrainingDiverged, match=rf"loss became nan at epoch {3 if after == 12 else 2}, step \d+.*--lr"):
        train_run(run, quiet=True)
    for kept in ("model", "checkpoint"):  # the last good model, and the resumable state of the last good epoch
        saved = load_file(tmp_path / "run" / f"{kept}.safetensors")
        assert all(torch.isfinite(t).all() for t in saved.values())


def test_a_time_limited_fit_says_what_the_limit_turned_off(digits, tiny_weights, tmp_path, capsys) -> None:
    result = fit(digits, _config(tiny_weights, strategy="full", epochs=1, time_limit=600), tmp_path / "run")
    said = capsys.readouterr().out
    assert result.config.ema_epochs == 0 and result.config.test_time_flip is False  # resolve()'s defaults
    assert "time limit: 600 s of training" in said and "no weight average (--ema-epochs 2: on)" in said
    assert "no test-time flip under --time-limit" in said
    asked = fit(
        digits, _config(tiny_weights, strategy="full", epochs=1, time_limit=600, ema_epochs=1.0), tmp_path / "b"
    )
    assert asked.config.ema_epochs == 1.0 and "no weight average" not in capsys.readouterr().out
