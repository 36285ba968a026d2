"""The moving average of the weights: the exact EMA of the trained parameters, frozen ones left alone."""

from __future__ import annotations

import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.averaging import WARMUP_STEPS, WeightAverage


def test_trained_parameters_follow_their_moving_average_and_frozen_ones_stay() -> None:
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    parse_strategy("partial:2").freeze(model)
    average = WeightAverage(model, horizon=4)  # decay 0.75 once warmed up
    frozen_before = average.model.backbone.stages[0][0].weight.clone()
    expected = model.linear("label").weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            model.linear("label").weight.fill_(float(step))
            model.backbone.stages[0][0].weight.add_(1.0)  # a frozen stage changed behind the optimizer's back
        average.update(step)
        decay = min(0.75, (1 + step) / (WARMUP_STEPS + step))
        expected = decay * expected + (1 - decay) * step
    assert torch.allclose(average.model.linear("label").weight, expected, atol=1e-4)
    assert not torch.allclose(
        average.model.linear("label").weight, model.linear("label").weight
    )  # it lags, as an average does
    assert torch.equal(average.model.backbone.stages[0][0].weight, frozen_before)
    assert not any(p.requires_grad for p in average.model.parameters())
