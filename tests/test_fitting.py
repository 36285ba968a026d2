"""The whole fit pipeline on real data (digits) and a tiny backbone: run dir, resume, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import TINY
from transferlab.config import FitConfig
from transferlab.errors import Interrupted
from transferlab.fitting import fit
from transferlab.train.loop import Trainer


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
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == ["0", "1", "2"] and meta["strategy"] == "partial:2" and meta["image_size"] == 32
    assert meta["test_time_flip"] is True  # trained with flips (augment auto: strong below 50 per class)
    assert len(_epochs(run)) == 3
    assert FitConfig.load(run / "config.yaml").epochs == 3
    # no pickle anywhere: every binary file is safetensors
    assert all(p.suffix in {".safetensors", ".json", ".yaml", ".jsonl", ".png"} for p in run.iterdir())
    # digits are easy: even 3 epochs of a tiny random-init network on 120 images beat chance (33%) clearly
    assert result.state.history[result.state.best_epoch - 1]["val_accuracy"] > 0.6


def test_resume_after_interruption_equals_an_uninterrupted_run(digits, tiny_weights, tmp_path, monkeypatch) -> None:
    config = _config(tiny_weights, strategy="full", augment="light")
    whole = fit(digits, config, tmp_path / "whole", quiet=True)

    original_step = Trainer._step

    def interrupt_mid_epoch_two(self: Trainer, x, y) -> None:
        original_step(self, x, y)
        if self.strategy.name == "full" and self.state.global_step == len(self.train) + 2:  # not the warm start
            self.interrupted = True  # what the SIGINT/SIGTERM handler does

    monkeypatch.setattr(Trainer, "_step", interrupt_mid_epoch_two)
    with pytest.raises(Interrupted, match="--resume"):
        fit(digits, config, tmp_path / "parted", quiet=True)
    monkeypatch.setattr(Trainer, "_step", original_step)
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


def test_same_seed_same_metrics_and_another_seed_differs(digits, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="head", epochs=2)
    runs = [fit(digits, config.updated(seed=s), tmp_path / f"r{i}", quiet=True) for i, s in enumerate((1, 1, 2))]
    losses = [[r["val_loss"] for r in _epochs(run.run_dir)] for run in runs]
    assert losses[0] == losses[1] != losses[2]


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_model(
    digits, tiny_weights, tmp_path, monkeypatch
) -> None:
    import torch
    from torch import nn

    from transferlab.train import loop
    from transferlab.train.loop import TrainingDiverged

    class DivergingLoss(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            DivergingLoss.calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if DivergingLoss.calls > 12 else loss  # after the first epochs

    monkeypatch.setattr(loop.nn, "CrossEntropyLoss", DivergingLoss)
    config = _config(tiny_weights, strategy="head", epochs=10)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch \d+, step \d+.*--lr"):
        fit(digits, config, tmp_path / "run", quiet=True)
    saved = load_file(tmp_path / "run" / "model.safetensors")  # the last good checkpoint, loadable
    assert all(torch.isfinite(t).all() for t in saved.values())
