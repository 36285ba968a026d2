"""Re-estimate BatchNorm running statistics of the trained stages on the target data ("precise BN").

During fine-tuning, trained BatchNorm layers normalise with batch statistics, while their running averages
lag behind (and start from the source data's). Evaluating with stale running statistics is the most reported
fine-tuning bug; recomputing them as a plain average over clean target batches makes evaluation see the same
normalisation that training did. Frozen stages are left untouched.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from transferlab.data.transforms import PRESETS
from transferlab.model import TransferModel
from transferlab.train.batches import Batches, CachedBatches, DomainBatches, ImageBatches, PairedBatches

MAX_BATCHES = 32


@torch.no_grad()
def recalibrate_batchnorm(model: TransferModel, batches: Batches, frozen: int, max_batches: int = MAX_BATCHES) -> None:
    norms = [
        m
        for index in range(frozen, model.backbone.num_stages)
        for stage in model.stage_copies(index)
        for m in stage.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.eval()
    for norm in norms:
        norm.train()
    for domain, clean in _clean_streams(batches):
        for index, batch in enumerate(clean.batches(seed=0, epoch=0)):
            if index >= max_batches:
                break
            model.outputs_from(batch.x, batch.start, domain)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def _clean_streams(batches: Batches) -> list[tuple[str | None, Batches]]:
    """The training batches, unaugmented, read in one fixed order: each domain's on their own, so that every
    domain's statistics (and domain-specific layers) see as many batches as a single source would. Domain
    adaptation's source and target batches stay side by side, as training normalised them."""
    if isinstance(batches, DomainBatches):
        return [(name, _clean_one(each)) for name, each in batches.domains.items()]
    if isinstance(batches, PairedBatches):
        return [(None, replace(batches, source=_clean_one(batches.source), target=_clean_one(batches.target)))]
    return [(None, _clean_one(batches))]


def _clean_one(batches: ImageBatches | CachedBatches) -> ImageBatches | CachedBatches:
    """Cached prefixes give their first view (clean unless the cache holds augmented views only: mild, and
    still the target's statistics)."""
    if isinstance(batches, CachedBatches):
        return replace(batches, views=batches.views[:1])
    return replace(batches, augment=PRESETS["none"])
