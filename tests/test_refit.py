"""`fit --refit`: once validation has chosen the epoch, the same recipe trains again on training and validation
images together, up to that epoch, and its model is the one kept. Real digit images, a tiny backbone."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import TINY, InterruptAt, image_folder
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.data import DecodedSplit, PreparedData
from transferlab.errors import Interrupted
from transferlab.fitdata import FitData
from transferlab.fitting import build_run, fit, refit_run, train_run
from transferlab.rundir import RunDir
from transferlab.train.callbacks import StopAfter
from transferlab.train.state import TrainState


def _config(weights: Path, **changes) -> FitConfig:
    settings = {"backbone": TINY, "weights": str(weights), "image_size": 32, "epochs": 3, "batch_size": 16}
    return FitConfig(**(settings | {"strategy": "full", "augment": "light", "report": False} | changes))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _state(checkpoint: Path) -> TrainState:
    with safe_open(checkpoint, framework="pt") as handle:
        return TrainState(**json.loads(handle.metadata()["state"]))


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    """train/ and test/ folders of real PNG files (a fifth of the training images are carved off for
    validation)."""
    return image_folder(tmp_path_factory.mktemp("digits"), *digits)


def test_the_refit_trains_on_every_labelled_image_and_replaces_the_chosen_model(folder, tiny_weights, tmp_path):
    plain = fit(str(folder), _config(tiny_weights), tmp_path / "plain", quiet=True)
    refitted = fit(str(folder), _config(tiny_weights, refit=True, report=True), tmp_path / "refit", quiet=True)
    files, refit = RunDir(tmp_path / "refit"), refitted.refit
    assert refit is not None and plain.refit is None
    # The first training is the plain run's, step for step; the refit starts over and stops at the chosen epoch.
    losses = [[r["val_loss"] for r in _rows(RunDir(run).metrics)] for run in (plain.run_dir, files.path)]
    assert losses[0] == losses[1]
    assert refitted.state.best_epoch == plain.state.best_epoch == refit.epochs
    assert len(_rows(files.refit_metrics)) == refit.epochs and refit.schedule_epochs == 3
    assert "val_loss" not in _rows(files.refit_metrics)[0]  # nothing is held out to validate on
    # Its batches are drawn from the training and the validation images.
    counts = json.loads(files.data.read_text())[""]["counts"]
    train, val = sum(counts["train"].values()), sum(counts["val"].values())
    assert val > 0 and refit.train_images == train + val
    assert _state(files.refit_checkpoint).global_step == refit.epochs * ((train + val) // 16)
    # The chosen model was scored before the refit replaced it: exactly the plain run's test scores.
    assert refit.selected == {key: plain.scores[key] for key in ("accuracy", "macro_f1", "split")}
    assert refit.selected["split"] == "test" == refitted.scores["split"]
    summary = json.loads(files.summary.read_text())
    assert summary["refit"]["selected"]["accuracy"] == plain.scores["accuracy"]
    assert summary["accuracy"] == refitted.scores["accuracy"]
    assert f"a refit on {train + val} training and validation images" in files.report.read_text()
    kept, chosen = load_file(files.weights), load_file(plain.run_dir / "model.safetensors")
    assert any(not torch.equal(kept[name], chosen[name]) for name in kept)


def test_a_refit_interrupted_midway_resumes_to_the_same_model(folder, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="partial:2", refit=True)  # the frozen prefix cached, from both sets
    fit(str(folder), config, tmp_path / "whole", quiet=True)

    run = build_run(str(folder), config, tmp_path / "parted", echo=lambda _: None)
    chosen = train_run(run, quiet=True)
    steps_per_epoch = (run.data.sizes()["train"] + run.data.sizes()["val"]) // 16
    with pytest.raises(Interrupted, match=re.escape(f"fit --resume {tmp_path / 'parted'}")):
        refit_run(run, chosen, quiet=True, callbacks=[InterruptAt(steps_per_epoch + 3)])  # in its second epoch
    files = RunDir(tmp_path / "parted")
    assert files.refit_checkpoint.is_file() and len(_rows(files.refit_metrics)) == 1
    assert fit(str(folder), config, files.path, quiet=True, resume=True).refit is not None

    whole = RunDir(tmp_path / "whole")
    assert len(_rows(files.metrics)) == len(_rows(whole.metrics))  # the first training was not run again
    parted_losses, whole_losses = ([r["train_loss"] for r in _rows(run.refit_metrics)] for run in (files, whole))
    del parted_losses[1], whole_losses[1]  # the resumed epoch's mean covers only the steps after the interruption
    assert parted_losses == whole_losses
    a, b = load_file(whole.weights), load_file(files.weights)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_without_a_test_split_the_chosen_models_validation_scores_stand_for_the_refit(
    digits, tiny_weights, tmp_path, capsys
) -> None:
    result = fit(digits, _config(tiny_weights, refit=True, epochs=2), tmp_path / "run")  # arrays: no test split
    assert result.refit is not None and result.refit.selected["split"] == "val"
    assert result.scores["split"] == "val" and result.scores["accuracy"] == result.refit.selected["accuracy"]
    assert "judged by the validation scores of the model it replaces" in capsys.readouterr().out


def test_with_val_in_train_appends_the_validation_images_and_keeps_validation() -> None:
    def split(first: int, count: int) -> DecodedSplit:
        images = torch.arange(first, first + count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 3, 2, 2)
        return DecodedSplit(images, torch.arange(first, first + count), [(2, 2)] * count, [])

    data = FitData({"": PreparedData(["a"], {"train": split(0, 5), "val": split(5, 2)}, [], [])})
    joined = data.with_val_in_train()
    assert joined.sources[""].splits["train"].labels.tolist() == list(range(7))
    assert joined.sources[""].splits["train"].images[:, 0, 0, 0].tolist() == list(range(7))
    assert joined.sources[""].splits["val"] is data.sources[""].splits["val"]
    assert data.train_images == 5 and joined.train_images == 7


def test_stop_after_stops_at_its_epoch_of_a_longer_schedule() -> None:
    trainer = SimpleNamespace(state=TrainState(epoch=2), stop_reason=None, epochs=20)
    StopAfter(3).on_epoch_end(trainer, {})
    assert trainer.stop_reason is None
    trainer.state.epoch = 3
    StopAfter(3).on_epoch_end(trainer, {})
    assert trainer.stop_reason == "stopped after epoch 3"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "digits", "--refit", "--time-limit", "60"], "refit trains a second time"),
        (["adapt", "digits", "--target", "digits", "--refit"], "unrecognized arguments: --refit"),
    ],
)
def test_a_refit_that_cannot_be_done_is_refused_in_one_line(argv, message, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors exit by themselves
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
