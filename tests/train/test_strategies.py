"""Each strategy trains exactly what it should: frozen stages stay bit-identical, BatchNorm statistics included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.data.transforms import Normalizer
from transferlab.errors import ConfigError
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer


def _train(strategy_name: str, digits: tuple[np.ndarray, np.ndarray], run_dir: Path, augment: str = "light"):
    torch.manual_seed(0)
    strategy = parse_strategy(strategy_name)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = prepare(load_source(digits, per_class=30), 32)
    config = FitConfig(
        strategy=strategy_name, epochs=2, lr=1e-2, image_size=32, augment=augment, batch_size=16, cached_views=2
    )
    train, val, _ = make_batches(model, strategy, config, data, "cpu")
    trainer = Trainer(model, strategy, config, train, val, run_dir=run_dir)
    trainer.fit()
    return trainer, before, strategy


def _changed(model: TransferModel, before: dict, prefix: str) -> bool:
    after = model.state_dict()
    return any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith(prefix))


@pytest.mark.parametrize(("name", "frozen"), [("head", 99), ("partial:2", 2), ("full", 0), ("scratch", 0)])
def test_frozen_stages_are_bit_identical_and_trained_ones_move(name: str, frozen: int, digits, tmp_path) -> None:
    trainer, before, strategy = _train(name, digits, tmp_path)
    model = trainer.model
    stages = model.backbone.num_stages
    assert strategy.num_frozen(model) == min(frozen, stages)
    for index in range(stages):
        prefix = f"backbone.stages.{index}."
        if index < strategy.num_frozen(model):
            # weights, biases AND BatchNorm running statistics
            assert not _changed(model, before, prefix), f"frozen stage {index} changed"
        else:
            assert _changed(model, before, prefix), f"trained stage {index} did not change"
    assert _changed(model, before, "heads.")


def test_trained_batchnorm_ends_with_statistics_of_the_target_data(digits, tmp_path) -> None:
    trainer, _, _ = _train("scratch", digits, tmp_path, augment="none")
    model = trainer.eval_model  # the weights' moving average: the model that is validated and saved
    conv, norm = model.backbone.stages[0]  # the stem: conv, then BatchNorm
    images = prepare(load_source(digits, per_class=30), 32).splits["train"].images
    with torch.no_grad():
        activations = conv(Normalizer(model.backbone.preprocessing)(images))
    mean, var = activations.mean(dim=(0, 2, 3)), activations.var(dim=(0, 2, 3))
    # Re-estimated on the clean training images (all but the ragged last batch): the statistics are theirs,
    # not the source's (this tiny backbone's initialisation: zeros and ones).
    assert torch.allclose(norm.running_mean, mean, atol=0.02 * var.sqrt().max().item())
    assert torch.allclose(norm.running_var, var, rtol=0.1)
    assert not torch.allclose(norm.running_var, torch.ones_like(var), rtol=0.1)


def test_pretrained_strategies_keep_source_batchnorm_statistics_while_weights_learn(digits, tmp_path) -> None:
    trainer, before, _ = _train("full", digits, tmp_path)
    after = trainer.model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    affine = [k for k in before if k.startswith("backbone.") and k.endswith("bn1.weight")]
    assert affine and any(not torch.equal(after[k], before[k]) for k in affine)


def test_discriminative_learning_rates() -> None:
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    groups = {g["name"]: g for g in parse_strategy("partial:2").param_groups(model, lr=1e-3)}
    assert groups["head"]["lr"] == 1e-3
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    trained = {id(p) for p in groups["backbone"]["params"]}
    assert not any(id(p) in trained for p in model.backbone.stages[:2].parameters())
    assert parse_strategy("scratch").param_groups(model, lr=1e-3)[1]["lr"] == 1e-3


def test_a_freeze_depth_the_backbone_lacks_is_refused_with_its_stage_names() -> None:
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    with pytest.raises(ConfigError, match="stem"):
        parse_strategy("partial:99").check(model)
    with pytest.raises(ConfigError, match="unknown strategy"):
        parse_strategy("freeze-some")


def test_freezing_turns_the_new_layers_back_on_whatever_froze_them_before() -> None:
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    model.requires_grad_(False)  # as a feature pass or an earlier strategy may leave it
    parse_strategy("head").freeze(model)
    assert all(p.requires_grad for p in model.new_layers.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
