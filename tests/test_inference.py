"""BatchNorm folded into the convolutions it follows, and TensorFlow's padding computed inside the convolution:
the same function, a copy, and never a wrong fold."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.domain_norm import DomainNorm
from transferlab.inference import without_batchnorm
from transferlab.model import TransferModel


def _norms(module: nn.Module) -> int:
    return sum(isinstance(each, nn.BatchNorm2d) for each in module.modules())


def _with_statistics(model: TransferModel) -> TransferModel:
    """BatchNorms that are not the identity: random running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(0)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            size = norm.num_features
            norm.running_mean.copy_(torch.randn(size, generator=generator))
            norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.randn(size, generator=generator))
            norm.bias.data.copy_(torch.randn(size, generator=generator))
    return model


def test_every_batchnorm_of_an_efficientnet_folds_and_the_outputs_stay_the_same() -> None:
    torch.manual_seed(0)
    model = _with_statistics(TransferModel(create_backbone(TINY, pretrained=False), 3)).train()
    x = torch.randn(4, 3, 32, 32)
    folded = without_batchnorm(model, "outputs_from", x[:1], 0)
    assert _norms(model) > 0 and _norms(folded) == 0
    assert model.training and not folded.training  # the original is neither changed nor left in eval mode
    with torch.no_grad():
        expected = model.eval().outputs_from(x, 0).logits["label"]
        assert torch.allclose(folded.outputs_from(x, 0).logits["label"], expected, rtol=1e-4, atol=1e-5)


class ConvolutionReadTwice(nn.Module):
    """A convolution whose output the BatchNorm reads, and a residual adds unnormalised: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convolution(x)
        return self.norm(y) + y


def test_a_fold_that_would_change_the_outputs_is_not_made() -> None:
    module = ConvolutionReadTwice().eval()
    module.norm.running_var.fill_(4.0)
    x = torch.randn(2, 3, 8, 8)
    kept = without_batchnorm(module, "forward", x[:1])
    assert kept is module and _norms(kept) == 1
    assert torch.equal(kept(x), module(x))


def test_batchnorms_kept_per_domain_are_left_alone() -> None:
    """One convolution feeds each domain's BatchNorm: folding the one the example ran through would break the
    others."""
    model = _with_statistics(
        TransferModel(
            create_backbone(TINY, pretrained=False), heads={"a": 3, "b": 3}, domains=True, domain_norms_from=1
        )
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    folded = without_batchnorm(model, "outputs_from", x[:1], 0, "a")
    per_domain = [each for each in folded.modules() if isinstance(each, DomainNorm)]
    assert per_domain and all(_norms(each) == 2 for each in per_domain)
    assert _norms(folded) < _norms(model)  # the stem's, shared by both domains, is folded
    with torch.no_grad():
        for domain in ("a", "b"):
            expected = model.outputs_from(x, 0, domain).logits[domain]
            assert torch.allclose(folded.outputs_from(x, 0, domain).logits[domain], expected, rtol=1e-4, atol=1e-5)


def _padded_by_a_copy(*_: object, **__: object) -> None:
    pytest.fail("F.pad ran")


@pytest.mark.parametrize("size", [(32, 32), (33, 30), (7, 8)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_tensorflow_padding_is_computed_inside_the_convolution_with_the_same_outputs(
    size: tuple[int, int], memory_format: torch.memory_format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lite0's stride-2 layers (kernels 3 and 5, one depthwise) pad unevenly as TensorFlow does; the copy pads
    inside the convolution, and no padded copy of an activation is made."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2),
        Conv2dSame(8, 8, 5, stride=2, groups=8),
        Conv2dSame(8, 4, 3, stride=1, dilation=2),
        nn.BatchNorm2d(4),
    ).eval()
    x = torch.randn(2, 3, *size).to(memory_format=memory_format)
    fast = without_batchnorm(model, "forward", x[:1])
    monkeypatch.setattr(F, "pad", _padded_by_a_copy)
    with torch.no_grad():
        got = fast(x)
        monkeypatch.undo()
        expected = model(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert all(type(each) is Conv2dSame for each in model.modules() if isinstance(each, Conv2dSame))


def test_a_pass_through_the_heads_alone_runs_the_model_itself_with_no_copy() -> None:
    """After a cached prefix of every stage only the heads run: there is nothing to fold, and a copy of the
    whole network per validation pass cost more than the pass."""
    model = TransferModel(create_backbone(TINY, pretrained=False), 3).eval()
    stages = model.backbone.num_stages
    features = model.backbone.forward_features(torch.randn(1, 3, 32, 32))  # what the cache holds
    assert without_batchnorm(model, "outputs_from", features, stages) is model
    assert without_batchnorm(model, "outputs_from", torch.randn(1, 3, 32, 32), 0) is not model
