"""An exponential moving average (EMA) of the trained weights: the model that is validated, kept and saved.

On a small target set the weights of the last epochs jump from batch to batch, and which epoch validation
happens to pick is noise; their average generalises better (benchmarks/README.md: no weight average cost
over a point). Only parameters are averaged: BatchNorm statistics stay the source's (pretrained strategies)
or are re-estimated on the averaged model (scratch).
"""

from __future__ import annotations

import copy

import torch

from transferlab.model import TransferModel

# Early on, the average follows the weights closely (as in timm's ModelEmaV3), so that the first epochs'
# validation is not scored on a blend of the initial weights.
WARMUP_STEPS = 10


class WeightAverage:
    """A copy of `model` whose trained parameters track an EMA of the model's over about `horizon` steps."""

    def __init__(self, model: TransferModel, horizon: float) -> None:
        self.decay = 1 - 1 / max(1.0, horizon)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # Frozen parameters never change: only the trained ones are averaged.
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        pairs = [
            (average, current)
            for (name, average), current in zip(self.model.named_parameters(), model.parameters(), strict=True)
            if name in trained
        ]
        self._averages: list[torch.Tensor] = [average for average, _ in pairs]
        self._currents: list[torch.Tensor] = [current for _, current in pairs]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Blend in the current weights after optimizer step number `step` (counted from 0): in one call over
        all of them, as torch's own EMA (swa_utils) does, rather than one kernel launch per tensor, which on a
        GPU costs more than the arithmetic."""
        decay = min(self.decay, (1 + step) / (WARMUP_STEPS + step))
        if self._averages:
            torch._foreach_lerp_(self._averages, self._currents, 1 - decay)
