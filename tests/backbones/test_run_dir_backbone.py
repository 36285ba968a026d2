"""A run dir is a valid backbone name: its trained weights come back, and its head becomes the source classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.errors import BackboneError
from transferlab.fitting import fit
from transferlab.model import TransferModel, save_model
from transferlab.run_backbone import open_backbone


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, TransferModel]:
    """A saved model whose every weight differs from a fresh random init (a seeded one, then shifted)."""
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), heads=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    model.eval()
    save_model(model, tmp_path, {"classes": {"label": ["a", "b", "c"]}, "strategy": "full", "image_size": 32})
    return tmp_path, model


def test_a_run_dir_gives_its_trained_backbone_and_head(run_dir) -> None:
    path, model = run_dir
    backbone = open_backbone(str(path)).eval()
    assert backbone.name == TINY  # the architecture, so a model trained on it rebuilds without this run dir
    assert backbone.weights_source == f"run:{path.resolve()}"
    assert backbone.source_classifier is not None

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = backbone.forward_features(x)
        assert torch.equal(features, model.backbone.forward_features(x))
        assert torch.allclose(backbone.source_classifier.logits(features), model(x), atol=1e-6)
        fresh = create_backbone(TINY, pretrained=False).eval()
        assert not torch.allclose(fresh.forward_features(x), features)


def test_a_run_dir_refuses_a_weights_file(run_dir, tiny_weights) -> None:
    path, _ = run_dir
    with pytest.raises(BackboneError, match="brings its own weights"):
        open_backbone(str(path), weights=tiny_weights)


def test_a_folder_without_model_json_is_an_unknown_backbone(tmp_path) -> None:
    with pytest.raises(BackboneError, match=r"unknown backbone .*\(nor a run dir"):
        open_backbone(str(tmp_path))


def test_a_run_dir_without_pretrained_gives_the_same_architecture_randomly_initialised(tmp_path) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone("test_efficientnet", pretrained=False), 3)
    save_model(model, tmp_path, {"classes": {"label": ["a", "b", "c"]}, "strategy": "full", "image_size": 32})
    fresh = open_backbone(str(tmp_path), pretrained=False)
    assert fresh.weights_source == "random" and fresh.stage_names == model.backbone.stage_names
    trained = dict(model.backbone.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in fresh.named_parameters())


def test_a_run_dir_tells_how_many_images_its_weights_were_trained_on(digits, tiny_weights, tmp_path) -> None:
    """What the advisor weighs before giving pretrained weights up for scratch."""
    config = FitConfig(backbone=TINY, strategy="scratch", image_size=32, epochs=1, per_class=20)
    fit(digits, config, tmp_path / "scratch", quiet=True)
    seen = open_backbone(str(tmp_path / "scratch")).pretraining_images
    assert seen is not None and 30 <= seen < 60  # 20 per class of 3 classes, less the validation images
    # Fine-tuned on the same draw again, it has seen it twice; a head alone leaves the backbone as it was.
    on_it = config.updated(backbone=str(tmp_path / "scratch"))
    fit(digits, on_it.updated(strategy="full"), tmp_path / "full", quiet=True)
    assert open_backbone(str(tmp_path / "full")).pretraining_images == 2 * seen
    fit(digits, on_it.updated(strategy="head"), tmp_path / "head", quiet=True)
    assert open_backbone(str(tmp_path / "head")).pretraining_images == seen
    # A weights file does not say what it was trained on, and nor then does a model fitted from it.
    fit(digits, config.updated(weights=str(tiny_weights), strategy="full"), tmp_path / "file", quiet=True)
    assert open_backbone(str(tmp_path / "file")).pretraining_images is None
