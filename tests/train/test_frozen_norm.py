"""Frozen BatchNorm folded into its convolution for the training step: the same loss and gradients, no BatchNorm
pass over the activations, every layer its own kind again after the step, and a training BatchNorm left alone."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn

from tests.conftest import TINY
from tests.test_inference import _with_statistics
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.frozen_norm import _KernelNormAct, foldable_pairs, folded, frozen_norms
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer


class _BatchNormCalls:
    """Counts the F.batch_norm calls that autograd records (a training step's, not a no-grad pass's, such as
    validation's): each is a BatchNorm pass over a whole activation, forward and back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        plain = nn.functional.batch_norm

        def counted(*args: object, **kwargs: object) -> torch.Tensor:
            self.count += torch.is_grad_enabled()
            return plain(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(nn.functional, "batch_norm", counted)


def _loss_and_gradients(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _same_loss_and_gradients(model: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> int:
    """Asserts that the folded step computes the plain step's loss and gradients; returns the folded pairs."""
    pairs = foldable_pairs(model, lambda: model(x[:1]))
    plain_loss, plain_gradients = _loss_and_gradients(model, x)
    calls = _BatchNormCalls(monkeypatch)
    with folded(pairs):
        loss, gradients = _loss_and_gradients(model, x)
    assert calls.count == 0  # no BatchNorm ran over the activations
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert gradients.keys() == plain_gradients.keys()  # γ and β are trained through the folded weights
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-3, atol=1e-5, msg=name)
    return len(pairs)


def test_an_efficientnet_with_frozen_statistics_gets_the_same_gradients_with_no_batchnorm_pass(monkeypatch) -> None:
    torch.manual_seed(0)
    model = _with_statistics(TransferModel(create_backbone(TINY, pretrained=False), 3))
    model.eval()  # every BatchNorm's statistics frozen (and no dropout, so the two passes draw alike)
    keys = list(model.state_dict())
    kinds = [type(each) for each in model.modules()]
    norms = sum(isinstance(each, nn.BatchNorm2d) for each in model.modules())

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.outputs_from(x, 0).logits["label"]

    assert _same_loss_and_gradients(Logits(), torch.randn(4, 3, 32, 32), monkeypatch) == norms
    assert [type(each) for each in model.modules()] == kinds and list(model.state_dict()) == keys


def test_tensorflow_padding_folds_too(monkeypatch) -> None:
    """Lite0's stride-2 convolutions pad as TensorFlow does (timm's Conv2dSame)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2, bias=False), BatchNormAct2d(8), nn.Conv2d(8, 4, 3, bias=True), nn.BatchNorm2d(4)
    )
    model = _with_statistics(model).eval()  # type: ignore[arg-type]
    assert _same_loss_and_gradients(model, torch.randn(2, 3, 9, 10), monkeypatch) == 2


def test_a_batchnorm_in_training_mode_runs_and_learns_its_statistics_as_always(monkeypatch) -> None:
    model, example = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), torch.randn(1, 3, 8, 8)
    pairs = foldable_pairs(model, lambda: model(example))
    assert len(pairs) == 1 and model.training
    calls = _BatchNormCalls(monkeypatch)
    with folded(pairs):
        model(torch.randn(4, 3, 8, 8) + 5)
    assert calls.count == 1 and model[1].running_mean.mean() != 0


def test_every_layer_is_its_own_kind_again_after_an_error_in_the_step() -> None:
    model, example = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval(), torch.randn(1, 3, 8, 8)
    pairs = foldable_pairs(model, lambda: model(example))
    with pytest.raises(RuntimeError), folded(pairs):
        assert type(model[0]) is not nn.Conv2d
        model(torch.randn(1, 5, 8, 8))  # the wrong number of channels
    assert type(model[0]) is nn.Conv2d and type(model[1]) is nn.BatchNorm2d and "_folded_norm" not in vars(model[0])


def test_the_training_loop_folds_the_pretrained_statistics_of_full(digits, tmp_path, monkeypatch) -> None:
    """`full` keeps the pretrained BatchNorm statistics: no training step runs a BatchNorm."""
    torch.manual_seed(0)
    strategy = parse_strategy("full")
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    data = prepare(load_source(digits, per_class=30), 32)
    config = FitConfig(
        strategy="full", epochs=2, lr=1e-2, image_size=32, augment="light", batch_size=16, cached_views=1
    )
    train, val, _ = make_batches(model, strategy, config, data, "cpu")
    scales = [each.weight.detach().clone() for each in model.modules() if isinstance(each, nn.BatchNorm2d)]
    calls = _BatchNormCalls(monkeypatch)
    trainer = Trainer(model, strategy, config, train, val, run_dir=tmp_path)
    trainer.fit()
    after = [each.weight for each in model.modules() if isinstance(each, nn.BatchNorm2d)]
    assert trainer.state.global_step >= 4 and after
    assert all(not torch.equal(a, b) for a, b in zip(scales, after, strict=True))  # γ trained through the fold
    assert calls.count == 0  # unfolded, every step would run each BatchNorm


def test_a_gpu_step_swaps_in_the_kernels_for_frozen_affine_batchnorms_alone_and_always_swaps_back() -> None:
    """On a GPU `frozen_norms` runs each frozen BatchNorm through the CUDA kernels (tests/test_cuda.py checks the
    arithmetic there). Here, on a CPU, those kernels refuse the tensors, and every layer is its own kind after."""
    frozen, plain, training = BatchNormAct2d(4), nn.BatchNorm2d(4, affine=False), nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), frozen, plain, training).eval()
    training.train()
    step = frozen_norms(model, lambda: None, torch.device("cuda"))
    with pytest.raises(NotImplementedError), step():
        assert [type(each) for each in model[1:]] == [_KernelNormAct, nn.BatchNorm2d, nn.BatchNorm2d]
        model(torch.randn(2, 3, 8, 8))
    assert [type(each) for each in model[1:]] == [BatchNormAct2d, nn.BatchNorm2d, nn.BatchNorm2d]
    assert "_invstd" not in vars(frozen)
