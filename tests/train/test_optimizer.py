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
from transferlab.train.state import TrainState, load_checkpoint, save_checkpoint


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


def test_the_update_runs_fused_and_moves_the_weights_as_the_per_tensor_update_does() -> None:
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    copies = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    start = [w.detach().clone() for w in weights]
    optimizer = build_optimizer(FitConfig(), [{"params": weights, "lr": 1e-2, "name": "head"}])
    assert optimizer.defaults["fused"]  # one kernel over all parameters: 3x quicker on Lite0 here
    plain = torch.optim.AdamW(copies, lr=1e-2, weight_decay=0.01, foreach=False)
    for _ in range(5):
        for group in (weights, copies):
            for w in group:
                w.grad = torch.ones_like(w) * w.detach().sum()
        optimizer.step()
        plain.step()
    for fused, reference, before in zip(weights, copies, start, strict=True):
        assert (fused - before).abs().min() > 1e-3  # every weight moved
        torch.testing.assert_close(fused, reference)


def test_a_channels_last_convolution_resumes_its_fused_update_from_a_checkpoint(tmp_path) -> None:
    def run(steps: int, conv: torch.nn.Conv2d, optimizer: torch.optim.Optimizer) -> None:
        for step in range(steps):
            conv.weight.grad = torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight) * (step + 1)
            conv.weight.grad = conv.weight.grad.contiguous(memory_format=torch.channels_last)
            optimizer.step()

    def built() -> tuple[torch.nn.Conv2d, torch.optim.Optimizer]:
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(4, 8, 3, bias=False).to(memory_format=torch.channels_last)
        return conv, build_optimizer(FitConfig(), [{"params": [conv.weight], "lr": 0.1, "name": "head"}])

    whole, optimizer = built()
    run(2, whole, optimizer)
    save_checkpoint(tmp_path / "checkpoint.safetensors", whole, optimizer, TrainState())
    run(2, whole, optimizer)
    resumed, fresh = built()
    load_checkpoint(tmp_path / "checkpoint.safetensors", resumed, fresh)
    run(2, resumed, fresh)  # the moments come back contiguous from the file: they must take the weight's layout
    torch.testing.assert_close(resumed.weight, whole.weight)


def test_a_checkpoint_of_the_per_tensor_update_resumes_fused_onto_the_same_weights(tmp_path) -> None:
    def built(fused: bool) -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        return layer, torch.optim.AdamW(layer.parameters(), lr=0.1, fused=fused)

    def run(steps: int, layer: torch.nn.Linear, optimizer: torch.optim.Optimizer) -> None:
        for step in range(steps):
            for p in layer.parameters():
                p.grad = torch.linspace(-1, 1, p.numel()).view_as(p) * (step + 1)
            optimizer.step()

    old, optimizer = built(fused=False)  # as every checkpoint before the fused update was written
    run(2, old, optimizer)
    save_checkpoint(tmp_path / "checkpoint.safetensors", old, optimizer, TrainState())
    run(2, old, optimizer)
    resumed, fused = built(fused=True)  # what build_optimizer makes now
    load_checkpoint(tmp_path / "checkpoint.safetensors", resumed, fused)
    assert all(group["fused"] for group in fused.param_groups)  # the code's choice, not the checkpoint's
    run(2, resumed, fused)
    torch.testing.assert_close(resumed.weight, old.weight)
    torch.testing.assert_close(resumed.bias, old.bias)
