"""The optimizer's groups: each at its learning rate, and biases and normalisation weights out of weight decay
when asked."""

from __future__ import annotations

import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.loop import build_optimizer


def test_biases_and_norms_can_be_kept_out_of_weight_decay_at_their_group_s_rate() -> None:
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    strategy = parse_strategy("full")
    strategy.freeze(model)
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    every = build_optimizer(FitConfig(), strategy.param_groups(model, 1e-3))
    assert all(group["weight_decay"] == 0.01 for group in every.param_groups)  # the setting as it always was

    split = build_optimizer(FitConfig(decay_biases_and_norms=False), strategy.param_groups(model, 1e-3))
    seen = [id(p) for group in split.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(trained)  # every trained parameter once, none dropped
    for group in split.param_groups:
        flat = [p.ndim <= 1 for p in group["params"]]
        assert all(flat) if group["weight_decay"] == 0.0 else not any(flat)
        assert group["lr"] == (1e-3 if group["name"].startswith("head") else 1e-4)  # the backbone at x0.1
    names = [group["name"] for group in split.param_groups]
    assert names == ["head", "head/flat", "backbone", "backbone/flat"]
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(bn.weight is p for group in split.param_groups if group["weight_decay"] == 0.0 for p in group["params"])
