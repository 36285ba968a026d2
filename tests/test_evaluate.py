"""Scoring a model: probabilities, with and without the mirror-image average."""

from __future__ import annotations

import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities
from transferlab.model import TransferModel


def test_test_time_flip_averages_each_image_with_its_mirror() -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 4)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    normalizer = Normalizer(model.backbone.preprocessing)
    plain = probabilities(model, images, normalizer)["label"]
    mirrored = probabilities(model, images.flip(-1), normalizer)["label"]
    model.test_time_flip = True
    both = probabilities(model, images, normalizer)["label"]
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the images are not symmetric: the average is real
    assert torch.allclose(both.sum(dim=1), torch.ones(5))
