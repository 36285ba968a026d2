"""`fit --ensemble N`: members fitted one after another into members/, the ensemble in the run dir predicting
their averaged probabilities through the usual API and export, and a killed ensemble resumed where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import transferlab.ensemble
import transferlab.scoring
from tests.conftest import TINY, InterruptAt, image_folder
from transferlab.classifier import load
from transferlab.cli import main
from transferlab.compare import compare
from transferlab.config import FitConfig
from transferlab.data import load_source
from transferlab.defaults import members_within
from transferlab.errors import ConfigError, Interrupted
from transferlab.export import TOLERANCE, export_model
from transferlab.fitting import FitResult, build_run, fit, fit_run, train_run
from transferlab.model import Ensemble


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    """train/ and test/ class subfolders of real PNG files."""
    return image_folder(tmp_path_factory.mktemp("digits"), digits[0][:150], digits[1][:150])


def _config(weights: Path, **changes) -> FitConfig:
    settings = {"backbone": TINY, "weights": str(weights), "strategy": "full", "image_size": 32, "epochs": 2}
    return FitConfig(**(settings | {"batch_size": 8, "ensemble": 2, "report": False} | changes))


@pytest.fixture(scope="module")
def fitted(folder, tiny_weights, tmp_path_factory) -> FitResult:
    return fit(folder, _config(tiny_weights), tmp_path_factory.mktemp("ensemble") / "run", quiet=True)


def _test_images(folder: Path) -> np.ndarray:
    paths = sorted((folder / "test").rglob("*.png"))
    return np.stack([np.asarray(Image.open(path).convert("RGB").resize((32, 32))) for path in paths])


def test_an_ensemble_predicts_its_members_averaged_probabilities(folder, fitted) -> None:
    run = fitted.run_dir
    members = [load(run / "members" / str(k)) for k in range(2)]
    seeds = [FitConfig.load(run / "members" / str(k) / "config.yaml").seed for k in range(2)]
    assert seeds == [0, 1]  # each member its own seed, and so its own split and batches
    images = _test_images(folder)
    ensemble = load(run)
    together = ensemble.predict_proba(images)
    np.testing.assert_allclose(together, np.mean([m.predict_proba(images) for m in members], axis=0), atol=1e-5)
    assert not np.allclose(members[0].predict_proba(images), members[1].predict_proba(images), atol=1e-3)
    summary = json.loads((run / "summary.json").read_text())
    assert [each["seed"] for each in summary["ensemble"]] == [0, 1] and summary["evaluated_on"] == "test"
    assert summary["accuracy"] == fitted.scores["accuracy"] == ensemble.evaluate(folder)["accuracy"]
    weights = load_file(run / "model.safetensors")
    assert {key.split(".")[1] for key in weights} == {"0", "1"}  # the members' weights, in one file


def test_the_commands_take_an_ensemble_as_one_model(folder, fitted, capsys) -> None:
    image = sorted((folder / "test").rglob("*.png"))[0]
    capsys.readouterr()
    assert main(["predict", str(fitted.run_dir), str(image)]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["path"] == str(image) and row["top"][0]["label"] == str(load(fitted.run_dir).predict([image])[0])
    assert main(["evaluate", str(fitted.run_dir), str(folder)]) == 0
    assert f"accuracy {fitted.scores['accuracy']:.4f}" in capsys.readouterr().out
    assert main(["runs", str(fitted.run_dir.parent)]) == 0
    _, row = capsys.readouterr().out.splitlines()  # the ensemble's row, none of its members'
    assert row.split()[:4] == [str(fitted.run_dir), "2", "×", "full"]


@pytest.mark.slow  # an ONNX export traces the model with torch.export: seconds
def test_an_ensemble_exports_to_one_onnx_file_that_predicts_as_it_does(folder, fitted) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra")
    export_model(fitted.run_dir, "onnx")  # checks its own parity on the test images
    session = onnxruntime.InferenceSession(str(fitted.run_dir / "model.onnx"))
    images = _test_images(folder)[:7]
    ours = session.run(["label"], {"images": images.transpose(0, 3, 1, 2).copy()})[0]
    expected = load(fitted.run_dir, inference_precision="32").predict_proba(images)
    assert np.abs(ours - expected).max() <= TOLERANCE


@pytest.mark.parametrize("killed", ["in its second epoch", "before it began"])
def test_an_ensemble_killed_in_its_second_member_resumes_to_the_uninterrupted_one(
    folder, tiny_weights, tmp_path, monkeypatch, capsys, killed
) -> None:
    config = _config(tiny_weights)
    fit(folder, config, tmp_path / "whole", quiet=True)

    def killed_in_member_two(source, member, run_dir, *, resume, quiet):
        if run_dir.name == "1" and not resume:  # a Ctrl-C there
            if killed == "before it began":
                raise Interrupted("stopped before the second member")
            run = build_run(source, member, run_dir, echo=lambda _: None)
            train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 2)])
        return fit_run(source, member, run_dir, resume=resume, quiet=quiet)

    monkeypatch.setattr(transferlab.ensemble, "fit_run", killed_in_member_two)
    with pytest.raises(Interrupted):
        fit(folder, config, tmp_path / "parted", quiet=True)
    monkeypatch.undo()
    assert not (tmp_path / "parted" / "model.safetensors").exists()
    first = tmp_path / "parted" / "members" / "0" / "model.safetensors"
    written = first.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["fit", "--resume", str(tmp_path / "parted")]) == 0  # the source is recorded in config.yaml
    assert first.stat().st_mtime_ns == written  # the finished member was not fitted again
    assert ("resuming at epoch 2" in capsys.readouterr().out) == (killed == "in its second epoch")
    whole, parted = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "parted"))
    assert whole.keys() == parted.keys() and all((whole[k] == parted[k]).all() for k in whole)


def test_an_ensemble_refuses_what_it_cannot_combine(tiny_weights) -> None:
    with pytest.raises(ConfigError, match="not with refit"):
        _config(tiny_weights, refit=True)
    with pytest.raises(ConfigError, match="at least 1 member"):
        _config(tiny_weights, ensemble=0)


def test_without_a_test_split_the_members_share_the_validation_images_they_are_scored_on(
    digits, tiny_weights, tmp_path, capsys
) -> None:
    result = fit(digits, _config(tiny_weights), tmp_path / "run")  # arrays: train and validation only
    assert "no test split: the members keep the first's validation images" in capsys.readouterr().out
    members = [FitConfig.load(tmp_path / "run" / "members" / str(k) / "config.yaml") for k in range(2)]
    assert [member.seed for member in members] == [0, 1] and members[1].split_seed == 0
    held_out = [
        load_source(digits, seed=split, sample_seed=member.sample_seed).splits["val"]
        for member, split in zip(members, [members[0].seed, members[1].split_seed], strict=True)
    ]
    np.testing.assert_array_equal(held_out[0].arrays, held_out[1].arrays)  # no member trained on another's val
    assert result.scores["split"] == "val" and result.scores["count"] == len(held_out[0])
    # Scored as the ensemble predicts: its probabilities on those images, against their labels
    predicted = load(result.run_dir).predict_proba(held_out[0].arrays).argmax(1)
    assert result.scores["accuracy"] == pytest.approx(np.mean(predicted == held_out[0].labels))


@pytest.mark.parametrize(
    ("limit", "first", "members"),
    [(480, 150, 4), (240, 150, 2), (224, 150, 1), (75, 75, 1), (75, 80, 1), (600, 1, 4), (100, 0, 1)],
)
def test_a_time_limit_holds_as_many_members_as_get_half_the_firsts_time(limit, first, members) -> None:
    assert members_within(limit, first) == members


def test_a_time_limit_the_first_member_leaves_unused_goes_to_more_members(
    folder, tiny_weights, tmp_path, capsys
) -> None:
    result = fit(folder, _config(tiny_weights, ensemble=None, time_limit=600, report=True), tmp_path / "run")
    said = capsys.readouterr().out
    run = result.run_dir
    summary = json.loads((run / "summary.json").read_text())
    first = summary["ensemble"][0]["train_seconds"]
    assert [each["seed"] for each in summary["ensemble"]] == [0, 1, 2, 3] and result.config.ensemble == 4
    assert f"the first member trained {first:.0f} s of the 600 s limit: 3 more, of" in said
    for k in (1, 2, 3):  # the rest of the limit, shared out
        assert FitConfig.load(run / "members" / str(k) / "config.yaml").time_limit == pytest.approx(
            (600 - first) / 3, abs=0.01
        )
    assert {key.split(".")[1] for key in load_file(run / "model.safetensors")} == {"0", "1", "2", "3"}
    assert FitConfig.load(run / "config.yaml").ensemble is None  # as asked: a resume decides the count again
    page = (run / "report.html").read_text()
    assert "<h2>Members</h2>" in page and "members/3" in page and "<h2>Training</h2>" in page  # the first's curves
    assert f"{100 * summary['ensemble'][3]['accuracy']:.2f}%" in page


def test_a_time_limit_that_holds_one_member_keeps_one_run(digits, tiny_weights, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(transferlab.ensemble, "members_within", lambda limit, first: 1)  # a first that used it up
    result = fit(digits, _config(tiny_weights, ensemble=None, time_limit=600, epochs=1), tmp_path / "run")
    assert "of the 600 s limit, and what is left holds no second member" in capsys.readouterr().out
    run = result.run_dir
    assert not (run / "members").exists() and result.config.ensemble == 1  # the member's files, moved up
    assert {"checkpoint.safetensors", "metrics.jsonl", "data.json", "model.safetensors"} <= {
        p.name for p in run.iterdir()
    }
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == 1
    assert FitConfig.load(run / "config.yaml").ensemble is None and FitConfig.load(run / "config.yaml").epochs == 1


@pytest.mark.parametrize("step", ["copying the model up", "removing the emptied member folder"])
def test_a_run_killed_while_its_one_member_moves_up_resumes_to_one_run(
    digits, tiny_weights, tmp_path, monkeypatch, step
) -> None:
    one_member = ("transferlab.ensemble.members_within", lambda limit, first: 1)  # a first that used it up
    monkeypatch.setattr(*one_member)
    config = _config(tiny_weights, ensemble=None, time_limit=600, epochs=1)
    whole = fit(digits, config, tmp_path / "whole", quiet=True)
    broken = "write_bytes_atomic" if step == "copying the model up" else "shutil.rmtree"

    def killed(*args, **kwargs):
        raise Interrupted(f"killed {step}")

    monkeypatch.setattr(f"transferlab.ensemble.{broken}", killed)
    with pytest.raises(Interrupted):
        fit(digits, config, tmp_path / "parted", quiet=True)
    monkeypatch.undo()
    monkeypatch.setattr(*one_member)
    resumed = fit(digits, config, tmp_path / "parted", resume=True, quiet=True)
    assert resumed.scores["accuracy"] == whole.scores["accuracy"] and resumed.state.epoch == 1
    images = digits[0][:20]
    np.testing.assert_array_equal(
        load(tmp_path / "parted").predict_proba(images), load(whole.run_dir).predict_proba(images)
    )


def test_a_single_run_under_a_time_limit_resumes_as_one(digits, tiny_weights, tmp_path) -> None:
    """A run dir with a checkpoint of its own (one from before automatic members, or a torchrun's) stays one run."""
    config = _config(tiny_weights, ensemble=None, time_limit=600, epochs=2)
    run = build_run(digits, config, tmp_path / "run", echo=lambda _: None)
    with pytest.raises(Interrupted):
        train_run(run, quiet=True, callbacks=[InterruptAt(3)])
    result = fit(digits, config, tmp_path / "run", resume=True, quiet=True)
    assert not (tmp_path / "run" / "members").exists() and result.state.epoch == 2


def test_compare_fits_one_model_a_strategy_whatever_its_time_limit_holds(folder, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, ensemble=None, time_limit=600, epochs=1)
    rows = compare(folder, ["head", "full"], config, tmp_path)
    assert [row["strategy"] for row in rows] == ["head", "full"] and not list(tmp_path.rglob("members"))


def test_an_ensembles_members_learn_from_the_same_labelled_images(folder, tiny_weights, tmp_path) -> None:
    """--per-class draws the labelled images by the sample seed, which every member shares: only the split of
    them into training and validation images is each member's own."""
    run = fit(folder, _config(tiny_weights, per_class=12, epochs=1), tmp_path / "run", quiet=True).run_dir
    drawn = []
    for k in range(2):
        member = FitConfig.load(run / "members" / str(k) / "config.yaml")
        data = load_source(folder, per_class=member.per_class, seed=member.seed, sample_seed=member.sample_seed)
        drawn.append((set(data.splits["train"].paths or []) | set(data.splits["val"].paths or []), data))
    assert drawn[0][0] == drawn[1][0] and len(drawn[0][0]) == 12 * 3
    assert drawn[0][1].splits["val"].paths != drawn[1][1].splits["val"].paths


def test_an_ensemble_is_scored_from_its_members_probabilities_without_running_them_again(
    folder, tiny_weights, tmp_path, monkeypatch
) -> None:
    passes = []
    model_pass = transferlab.scoring.probabilities
    monkeypatch.setattr(
        transferlab.scoring, "probabilities", lambda model, *a, **k: passes.append(model) or model_pass(model, *a, **k)
    )
    result = fit(folder, _config(tiny_weights), tmp_path / "run", quiet=True)
    # each member's model once, the ensemble never
    assert len(passes) == 2 and not any(isinstance(model, Ensemble) for model in passes)
    scores = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert scores["accuracy"] == result.scores["accuracy"] == load(tmp_path / "run").evaluate(folder)["accuracy"]
