"""The frozen-prefix cache: a frozen part of the network runs once per image (and view), not once per epoch.

For `head` the prefix is the whole backbone and the cache holds pooled feature vectors; for `partial:K` it
holds the activations after stage K. With augmentation, `views` copies of each image are cached, augmented
(and one clean among them when the augmentation distorts), and training draws one of them per image per
epoch: the trade is a fixed set of augmentations for a backbone pass that is paid once. Without
augmentation the one view is the clean image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from transferlab.backbones import Backbone
from transferlab.data.transforms import PRESETS, Augment, Normalizer
from transferlab.distributed import World
from transferlab.inference import INFERENCE_BATCH, evaluating, without_batchnorm
from transferlab.model import TransferModel
from transferlab.train.batches import step_seed

log = logging.getLogger("transferlab")

DEFAULT_BUDGET_BYTES = 3 * 2**30


@dataclass(frozen=True)
class FinalFeatures:
    """A pretrained network's pooled final features, per split, as the advisor computed them (eval mode,
    BatchNorm folded): the same pass as the heads' warm start caches, which reads them here instead of paying
    for it again."""

    images: dict[str, torch.Tensor]  # each split's uint8 images, as the advisor read them
    features: dict[str, np.ndarray]  # [N, feature_dim] each, in the images' order

    def of(self, split: str, images: torch.Tensor) -> torch.Tensor | None:
        """The features of `split` when they were computed from all of `images` itself, else None."""
        if self.images.get(split) is not images:
            return None
        return torch.from_numpy(self.features[split])


@torch.no_grad()
def prefix_outputs(
    model: TransferModel,
    images: torch.Tensor,
    frozen: int,
    normalizer: Normalizer,
    batch_size: int = INFERENCE_BATCH,
    augment: Augment = PRESETS["none"],
    seed: int = 0,
    device: str = "cpu",
    world: World | None = None,
) -> torch.Tensor:
    """Outputs of the first `frozen` stages (pooled when that is all of them) for every image, in eval mode.

    Among several processes (`world`), each rank runs every size-th batch, with the seed that batch has in
    one process, and the ranks combine their parts: the cache is one process's, computed once between them.
    """
    world = world or World(device=device)
    whole = frozen >= model.backbone.num_stages
    parts = {}
    fast: Backbone | None = None
    with evaluating(model):
        for start in range(world.rank * batch_size, len(images), world.size * batch_size):
            generator = torch.Generator().manual_seed(step_seed(seed, -1, start))
            x = normalizer(images[start : start + batch_size], augment, generator, device)
            fast = fast or without_batchnorm(model.backbone, "forward_stages", x[:1], 0, frozen)
            out = fast.forward_stages(x, 0, frozen)
            out = fast.pool(out) if whole else out
            # float16 halves the cache; these activations sit well inside its range and precision.
            parts[start] = out.to("cpu", torch.float16 if not whole else torch.float32).contiguous()
    return world.combine(parts, len(images)) if world.active else torch.cat(list(parts.values()))


def views_that_fit(model: TransferModel, frozen: int, image_size: int, count: int, wanted: int, budget: int) -> int:
    """How many views of `count` images fit in `budget` bytes of cache; 0 if not even one."""
    with evaluating(model), torch.no_grad():  # a probe batch in train mode would move the BatchNorm statistics
        probe = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
        out = model.backbone.forward_stages(probe, 0, frozen)
    whole = frozen >= model.backbone.num_stages
    per_image = (model.backbone.feature_dim * 4) if whole else out.numel() * 2
    return min(wanted, budget // max(1, per_image * count))


def cache_views(
    model: TransferModel,
    images: torch.Tensor,
    frozen: int,
    normalizer: Normalizer,
    augment: Augment,
    views: int,
    seed: int,
    batch_size: int = INFERENCE_BATCH,
    device: str = "cpu",
    world: World | None = None,
) -> torch.Tensor:
    """[views, N, ...]: each view augmented with its own seed; view 0 is the clean image when `augment` is
    none or distorts (see `Augment.caches_clean_view`). `world`: shared out among processes (prefix_outputs)."""
    clean = int(augment.caches_clean_view)
    stack = [prefix_outputs(model, images, frozen, normalizer, batch_size, device=device, world=world)] if clean else []
    for view in range(clean, views):
        seed_of_view = seed * 7919 + view
        stack.append(
            prefix_outputs(model, images, frozen, normalizer, batch_size, augment, seed_of_view, device, world)
        )
    return torch.stack(stack)
