"""`adapt`: a labelled source, an unlabelled target, one training loop. Real digits against their negatives
(a real shift: the same shapes, every pixel inverted), a tiny backbone, a few epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import transferlab
from tests.conftest import TINY, InterruptAt
from transferlab.adaptation.methods import build_adaptation
from transferlab.backbones import create_backbone
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.data.splitting import held_out_count
from transferlab.errors import ConfigError, Interrupted
from transferlab.fitting import build_run, fit, train_run
from transferlab.model import TransferModel
from transferlab.run_backbone import open_backbone
from transferlab.train.objectives import CrossEntropy


def _config(weights: Path, **changes) -> FitConfig:
    settings = {"backbone": TINY, "weights": str(weights), "image_size": 32, "epochs": 2, "batch_size": 16}
    return FitConfig(**(settings | changes))


@pytest.fixture(scope="module")
def target(digits, tmp_path_factory) -> Path:
    """The digits' negatives as a folder: train/ (labels there, never read) and a labelled test/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("negatives")
    images, labels = digits
    for i, (image, label) in enumerate(zip(images[::2], labels[::2], strict=True)):
        split = "test" if i % 4 == 0 else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - image).save(folder / f"{i}.png")
    return root


def _source(digits) -> tuple:
    images, labels = digits
    return images[1::2], labels[1::2], ["0", "1", "2"]


@pytest.fixture(scope="module")
def dann_run(digits, target, tiny_weights, tmp_path_factory):
    config = _config(tiny_weights, strategy="partial:2", adaptation="dann")
    return fit(_source(digits), config, tmp_path_factory.mktemp("dann") / "run", quiet=True, target=str(target))


def test_a_dann_run_scores_the_target_test_split_and_keeps_the_source_score_beside_it(dann_run) -> None:
    scores = json.loads((dann_run.run_dir / "eval.json").read_text())
    assert scores["split"] == "target test" and scores["accuracy"] == dann_run.scores["accuracy"]
    assert scores["source"]["split"] == "val"  # in-memory source without a test split
    summary = json.loads((dann_run.run_dir / "summary.json").read_text())
    assert summary["evaluated_on"] == "target test"


def test_a_dann_run_logs_source_loss_transfer_loss_discriminator_and_domain_distance(dann_run) -> None:
    rows = [json.loads(line) for line in (dann_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["train/loss/source"] > 0 and row["train/transfer/dann"] > 0
        assert 0 <= row["train/domain/accuracy"] <= 1
        assert 0 <= row["a_distance"] <= 2


def test_dev_validation_keeps_the_checkpoint_by_the_weighted_source_loss(digits, target, tiny_weights, tmp_path):
    config = _config(tiny_weights, strategy="partial:2", adaptation="auto", validation="dev")
    run = fit(_source(digits), config, tmp_path / "run", quiet=True, target=str(target))
    rows = run.state.history
    assert all(row["dev_loss_se"] > 0 for row in rows)
    assert [row["dev_loss"] for row in rows] != [row["val_loss"] for row in rows]
    assert run.state.best_metric == min(row["dev_loss"] for row in rows)  # what the checkpoint read
    page = (run.run_dir / "report.html").read_text()  # advice.json holds the method alone: no strategy advice
    assert "Why this adaptation method" in page and "DEV&#x27;s estimate" in page
    assert "Why this strategy" not in page
    with pytest.raises(ConfigError, match="give one"):
        fit(_source(digits), config, tmp_path / "untargeted", quiet=True)  # no target to weigh towards


def test_an_adapted_run_dir_loads_and_predicts_like_any_other(dann_run, digits) -> None:
    model = transferlab.load(dann_run.run_dir)
    assert model.model_.bottleneck == 256
    predicted = model.predict(255 - digits[0][:8])
    assert len(predicted) == 8 and set(predicted) <= {"0", "1", "2"}


@pytest.mark.slow
def test_an_adapted_run_dir_reports_and_exports_like_any_other(dann_run, target, capsys) -> None:
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'transferlab[export]'")
    page = (dann_run.run_dir / "report.html").read_text()
    assert "target test accuracy" in page  # the report leads with the target's score
    # the model reads a bottleneck between the pooled features and its head: the export carries it too
    assert main(["export", str(dann_run.run_dir), "--check-images", str(target / "test")]) == 0
    assert "max |probability difference|" in capsys.readouterr().out
    assert main(["predict", str(dann_run.run_dir / "model.onnx"), str(target / "test")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(list((target / "test").rglob("*.png")))


def test_an_adapted_run_dir_is_a_backbone_for_the_next_transfer(dann_run) -> None:
    backbone = open_backbone(str(dann_run.run_dir))
    assert backbone.source_classifier is None  # its head reads the bottleneck, not the pooled features
    assert backbone.weights_source.startswith("run:")


def test_method_none_trains_exactly_as_a_plain_fit_on_the_source(digits, target, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="partial:2", epochs=1)
    plain = fit(_source(digits), config, tmp_path / "plain", quiet=True)
    none = fit(_source(digits), config.updated(adaptation="none"), tmp_path / "none", quiet=True, target=str(target))
    assert [r["val_loss"] for r in none.state.history] == [r["val_loss"] for r in plain.state.history]
    assert all(torch.equal(none.model.state_dict()[k], v) for k, v in plain.model.state_dict().items())
    assert none.scores["split"] == "target test"


def test_adabn_reestimates_batchnorm_statistics_on_the_target(digits, target, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="partial:2", epochs=1)
    none = fit(_source(digits), config.updated(adaptation="none"), tmp_path / "none", quiet=True, target=str(target))
    adabn = fit(_source(digits), config.updated(adaptation="adabn"), tmp_path / "adabn", quiet=True, target=str(target))
    means = [
        [m.running_mean for m in run.model.backbone.modules() if isinstance(m, nn.BatchNorm2d)] for run in (none, adabn)
    ]
    assert not torch.allclose(means[0][0], means[1][0])  # the first layer sees inverted pixels: other statistics
    saved = transferlab.load(adabn.run_dir).model_  # and the re-estimated statistics are what was saved
    first = next(m for m in saved.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(first.running_mean, means[1][0])


def test_an_unlabelled_target_folder_trains_and_says_its_accuracy_is_unknown(
    digits, tiny_weights, tmp_path, capsys
) -> None:
    from PIL import Image

    for i, image in enumerate(digits[0][:40]):
        Image.fromarray(255 - image).save(tmp_path / f"{i}.png")  # no class folders: no labels at all
    config = _config(tiny_weights, strategy="head", epochs=1, adaptation="coral")
    result = fit(_source(digits), config, tmp_path / "run", target=str(tmp_path))
    assert result.scores["target"] is None and result.scores["split"] == "val"
    assert "target accuracy unknown" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_adaptation_resumes_onto_the_same_weights(digits, target, tiny_weights, tmp_path) -> None:
    config = _config(tiny_weights, strategy="partial:2", adaptation="dann", source_weighting="classes", epochs=2)
    source = _source(digits)
    whole = fit(source, config, tmp_path / "whole", quiet=True, target=str(target))
    run = build_run(source, config, tmp_path / "parted", echo=lambda _: None, target=str(target))
    with pytest.raises(Interrupted, match="transferlab adapt --resume"):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 2)])
    resumed = fit(source, FitConfig(), tmp_path / "parted", resume=True, quiet=True)  # the target from config.yaml
    assert [r["val_loss"] for r in resumed.state.history] == [r["val_loss"] for r in whole.state.history]
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in whole.model.state_dict().items())


@pytest.mark.slow
def test_adapt_refuses_a_target_with_no_images(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = main(["adapt", "digits", "--target", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and "has no images" in error


@pytest.mark.slow
def test_adapt_refuses_a_target_whose_files_cannot_be_read_as_images(digits, tmp_path, capsys) -> None:
    (tmp_path / "target").mkdir()
    for i in range(3):
        (tmp_path / "target" / f"{i}.png").write_bytes(b"not an image")
    code = main(["adapt", "digits", "--target", str(tmp_path / "target"), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "no usable images" in error


def test_adabn_refuses_a_backbone_without_batchnorm(tiny_weights) -> None:
    model = TransferModel(create_backbone(TINY, weights=tiny_weights), 3)
    for module in list(model.modules()):
        for child, layer in list(module.named_children()):
            if isinstance(layer, nn.BatchNorm2d):
                setattr(module, child, nn.Identity())
    with pytest.raises(ConfigError, match="no BatchNorm"):
        build_adaptation(_config(tiny_weights, adaptation="adabn"), model, None)
    assert isinstance(build_adaptation(_config(tiny_weights, adaptation="none"), model, None), CrossEntropy)


def test_adapt_without_a_target_is_one_line(capsys) -> None:
    assert main(["adapt", "digits"]) == 2
    assert "--target" in capsys.readouterr().err


def test_importance_weights_train_on_the_source_alone(digits, target, tiny_weights, tmp_path, capsys) -> None:
    config = _config(tiny_weights, strategy="head", epochs=1, adaptation="none", source_weighting="importance")
    result = fit(_source(digits), config, tmp_path / "run", target=str(target))
    out = capsys.readouterr().out
    images, labels, _ = _source(digits)  # less what validation holds of each class
    trained = len(images) - sum(held_out_count(int(n)) for n in np.bincount(labels))
    assert f"importance weights: {trained} source images, effective sample size" in out
    assert result.scores["split"] == "target test"
    assert np.isfinite(result.state.history[0]["train/loss/source"])


def test_the_estimator_adapts_to_in_memory_target_images(digits, tiny_weights, tmp_path) -> None:
    images, labels = digits
    settings = {"weights": str(tiny_weights), "image_size": 32, "epochs": 1, "batch_size": 16}
    clf = transferlab.TransferClassifier(TINY, strategy="head", adaptation="coral", **settings)
    clf.fit(_source(digits), out=tmp_path / "run", target=(255 - images[::2], labels[::2]))  # labels unused
    assert clf.scores_["target"] is None  # in memory, the target has no test split: its accuracy is unknown
    assert clf.model_.bottleneck == 256
    assert len(clf.predict(255 - images[:5])) == 5
