"""Mixup and CutMix: each training batch blended with a shuffled copy of itself, and its labels in the same
proportion (Zhang et al., ICLR 2018; Yun et al., ICCV 2019).

The batch's images are mixed here and its labels by the objective (`Batch.mix`): the loss of a mixed batch is
`share` × the loss on its own labels + (1 − `share`) × the loss on its partners'. The randomness is the global
generator's, which the loop seeds at each step, so a resumed run mixes exactly as the uninterrupted one would.
When the loop trains on a cached frozen prefix, its outputs are what gets mixed: mixup at that stage is
manifold mixup (Verma et al., ICML 2019), and CutMix cuts its box from the feature maps. timm's `Mixup` does
the same job but is not a dependency; torchvision's `MixUp`/`CutMix` return one-hot targets, which would
bypass the objectives' label smoothing and ignore index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from transferlab.config import MIXES
from transferlab.errors import ConfigError

if TYPE_CHECKING:
    from transferlab.train.batches import Batch


@dataclass(frozen=True)
class Mixed:
    """How a batch was mixed: each row's partner's labels, and how much of each image is its own."""

    partner: torch.Tensor
    share: float


def mix_batch(batch: Batch, kind: str, alpha: float) -> Batch:
    """`batch` mixed by `kind` with a share drawn from Beta(alpha, alpha); unchanged for `none`."""
    if kind == "none":
        return batch
    if kind not in MIXES:
        raise ValueError(f"unknown mix {kind!r}: use one of {', '.join(MIXES)}")
    if kind == "cutmix" and batch.x.dim() != 4:
        raise ConfigError("cutmix cuts boxes from images, and this strategy trains on pooled features: use mixup")
    share = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(len(batch.x)).to(batch.x.device, non_blocking=True)
    x = batch.x
    if kind == "mixup":
        x = x * share + x[order] * (1 - share)
    else:
        height, width = x.shape[-2:]
        top, bottom, left, right = _box(height, width, share)
        x = x.clone()
        x[..., top:bottom, left:right] = batch.x[..., top:bottom, left:right][order]  # gathers the boxes only
        share = 1 - (bottom - top) * (right - left) / (height * width)  # the area the box really took
    return replace(batch, x=x, mix=Mixed(batch.y[order], share))


def _box(height: int, width: int, share: float) -> tuple[int, int, int, int]:
    """A box of about (1 − share) of the image's area, centred anywhere, clipped at the borders: CutMix's."""
    side = (1 - share) ** 0.5
    centre_y, centre_x = (int(torch.randint(n, ())) for n in (height, width))
    half_h, half_w = int(height * side) // 2, int(width * side) // 2
    return (
        max(centre_y - half_h, 0),
        min(centre_y + half_h, height),
        max(centre_x - half_w, 0),
        min(centre_x + half_w, width),
    )
