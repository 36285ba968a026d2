"""Batched augmentation and normalisation on uint8 image tensors.

Augmentation runs on whole batches at once (one affine grid per batch), not per image in Python, so the
decoded cache feeds the model without a per-item pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transferlab.backbones import Preprocessing


@dataclass(frozen=True)
class Augment:
    """One preset: random affine (flip, scale, shift, rotation) plus optional colour jitter and erasing."""

    name: str
    flip: bool = False
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    rotate_deg: float = 0.0
    color: float = 0.0
    erase: float = 0.0

    @property
    def active(self) -> bool:
        return self != PRESETS["none"]

    @property
    def distorts(self) -> bool:
        """Rotation, colour jitter or erasing: views far enough from the clean image that a model fitted on
        cached views of it also needs the clean one, which is what it will see at test time."""
        return bool(self.rotate_deg or self.color or self.erase)

    @property
    def caches_clean_view(self) -> bool:
        """Whether a feature cache under this augmentation holds the clean image (as its view 0): always
        without augmentation, and beside distorting augmentation."""
        return not self.active or self.distorts


PRESETS = {
    "none": Augment("none"),
    "light": Augment("light", flip=True, scale=(0.9, 1.1), shift=0.08),
    "strong": Augment("strong", flip=True, scale=(0.8, 1.2), shift=0.12, rotate_deg=12, color=0.3, erase=0.25),
}


def augment_batch(x: torch.Tensor, preset: Augment, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch [N, 3, H, W] in [0, 1]; randomness comes only from `generator`."""
    if not preset.active:
        return x
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    scale = uniform(*preset.scale)
    angle = uniform(-preset.rotate_deg, preset.rotate_deg) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if preset.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-preset.shift, preset.shift) * 2], dim=1),
            torch.stack([sin * flip, cos, uniform(-preset.shift, preset.shift) * 2], dim=1),
        ],
        dim=1,
    ).to(x, non_blocking=True)  # a plain copy to a GPU would wait for everything queued there (batches._to)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if preset.color:
        brightness = uniform(1 - preset.color, 1 + preset.color).to(x, non_blocking=True).view(n, 1, 1, 1)
        contrast = uniform(1 - preset.color, 1 + preset.color).to(x, non_blocking=True).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean * brightness).clamp(0, 1)
    if preset.erase:
        x = _random_erase(x, preset.erase, generator)
    return x


def _random_erase(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Blank one random rectangle (up to a quarter of the side area) in a `probability` share of the images."""
    n, _, h, w = x.shape
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    eh = (torch.rand(n, generator=generator) * 0.4 + 0.1) * h
    ew = (torch.rand(n, generator=generator) * 0.4 + 0.1) * w
    top = torch.rand(n, generator=generator) * (h - eh)
    left = torch.rand(n, generator=generator) * (w - ew)
    chosen = torch.rand(n, generator=generator) < probability
    mask = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
        & chosen.view(n, 1, 1)
    )
    return x.masked_fill(mask.unsqueeze(1).to(x.device, non_blocking=True), 0.5)


class Normalizer:
    """uint8 [N, 3, H, W] → float, scaled to [0, 1], optionally augmented, normalised with the weights' mean/std."""

    def __init__(self, preprocessing: Preprocessing, channels_last: bool = True) -> None:
        self.mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        self.channels_last = channels_last

    def __call__(
        self,
        images: torch.Tensor,
        preset: Augment = PRESETS["none"],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255)
        if preset.active:
            if generator is None:
                raise ValueError("augmentation needs a generator, so that runs are reproducible")
            x = augment_batch(x, preset, generator)
        x = (x - self.mean.to(x.device, non_blocking=True)) / self.std.to(x.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
