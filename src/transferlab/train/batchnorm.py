"""Re-estimate BatchNorm running statistics of the trained stages on the target data ("precise BN").

During fine-tuning, trained BatchNorm layers normalise with batch statistics, while their running averages
lag behind (and start from the source data's). Evaluating with stale running statistics is the most reported
fine-tuning bug; recomputing them as a plain average over clean target batches makes evaluation see the same
normalisation that training did. Frozen stages are left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import nn

from transferlab.data.transforms import PRESETS
from transferlab.model import TransferModel
from transferlab.train.batches import Batches, CachedBatches

MAX_BATCHES = 32


@torch.no_grad()
def recalibrate_batchnorm(model: TransferModel, batches: Batches, frozen: int, max_batches: int = MAX_BATCHES) -> None:
    norms = [
        m
        for stage in model.backbone.stages[frozen:]
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
    for index, (x, _) in enumerate(_clean(batches)):
        if index >= max_batches:
            break
        model.forward_from(x, batches.start_stage)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def _clean(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches, unaugmented, in one fixed order; cached prefixes give their first view (clean
    unless the cache holds augmented views only: mild, and still the target's statistics)."""
    if isinstance(batches, CachedBatches):
        return replace(batches, views=batches.views[:1]).batches(seed=0, epoch=0)
    return replace(batches, augment=PRESETS["none"]).batches(seed=0, epoch=0)
