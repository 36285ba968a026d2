"""AdaBN's alignment: a target that is the source under a change of contrast and brightness is normalised back
onto the source by the new statistics alone, and a target without shift changes nothing."""

from __future__ import annotations

import torch
from torch import nn

from tests.conftest import TINY
from transferlab.adaptation.adabn import align_batchnorm
from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.model import TransferModel


def _model(weights) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone(TINY, weights=weights), 3).eval()


def _normalised(model: TransferModel, images: torch.Tensor) -> torch.Tensor:
    return Normalizer(model.backbone.preprocessing, channels_last=False)(images)


def _features(model: TransferModel, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.outputs_from(_normalised(model, images), 0).features


def _images() -> torch.Tensor:
    """Smooth random images (noise upsampled), so that the deep layers' feature maps carry structure."""
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(128, 3, 8, 8, generator=generator)
    return (nn.functional.interpolate(coarse, size=32, mode="bilinear") * 255).round().to(torch.uint8)


def _statistics(model: TransferModel) -> list[torch.Tensor]:
    return [
        t.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for t in (m.running_mean, m.running_var)
    ]


def test_a_target_without_shift_leaves_every_statistic_as_it_was(tiny_weights) -> None:
    model, images = _model(tiny_weights), _images()
    before = _statistics(model)
    align_batchnorm(model, _normalised(model, images), _normalised(model, images))
    after = _statistics(model)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(before, after, strict=True))


def test_a_contrast_and_brightness_shift_is_normalised_away(tiny_weights) -> None:
    model, images = _model(tiny_weights), _images()
    target = (images.float() * 0.5 + 100).round().to(torch.uint8)  # half the contrast, much brighter
    reference = _features(model, images)
    shifted = (_features(model, target) - reference).norm() / reference.norm()
    align_batchnorm(model, _normalised(model, images), _normalised(model, target))
    aligned = (_features(model, target) - reference).norm() / reference.norm()
    assert shifted > 0.1 and aligned < 0.2 * shifted
