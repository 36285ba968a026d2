"""The Backbone contract. Everything above `backbones/` speaks only this, never timm directly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Preprocessing:
    """How images must look to the weights: travels with them, never a flag the user must remember."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class SourceClassifier:
    """The classifier the weights came with (e.g. ImageNet's 1000 classes), kept aside as plain tensors.

    It is not a module of the new model, so it is never trained and never saved with it; the advisor reads it
    to see how confidently the source task recognises the target images.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(features, self.weight.to(features), self.bias.to(features))


class Backbone(nn.Module):
    """A pretrained (or randomly initialised) convolutional base, cut into ordered stages, low to high.

    `forward_stages(x, start, end)` runs a slice of the stages, so a frozen prefix can run once and be cached;
    `forward_features(x)` runs them all and pools to a `feature_dim` vector.
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[nn.Module],
        stage_names: Sequence[str],
        feature_dim: int,
        preprocessing: Preprocessing,
        source_classifier: SourceClassifier | None = None,
        weights_source: str = "random",
        pretraining_images: int | None = 0,
    ) -> None:
        super().__init__()
        if len(stages) != len(stage_names):
            raise ValueError("one name per stage")
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.stage_names = list(stage_names)
        self.feature_dim = feature_dim
        self.preprocessing = preprocessing
        self.source_classifier = source_classifier
        self.weights_source = weights_source
        # How many labelled images the weights have been trained on (0: random; None: not known). The advisor
        # weighs it: features from a million images are not given up for scratch on the same evidence as a
        # small source's.
        self.pretraining_images = pretraining_images

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward_stages(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run stages[start:end] on x (a normalised image batch when start == 0)."""
        for stage in self.stages[start:end]:
            x = stage(x)
        return x

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Global average pooling of a stage's output map to one vector per image."""
        return x.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_stages(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
