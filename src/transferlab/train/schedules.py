"""Learning-rate schedules as pure functions of progress, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

from transferlab.config import FitConfig


def lr_factor(config: FitConfig, epoch: int, step: int, steps_per_epoch: int, epochs: int | None = None) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `epoch` (0-based), in a run of `epochs`
    epochs (default: the config's; fewer when a time limit fitted the run to it)."""
    epochs = epochs or config.epochs
    if epochs is None:
        raise ValueError("lr_factor takes a resolved config (defaults.resolve): epochs must be set")
    total = max(1, epochs * steps_per_epoch)
    progress = min(1.0, (epoch * steps_per_epoch + step) / total)
    if config.schedule == "step":
        # The classic fine-tuning recipe: drop the rate by `gamma` every `step_size` epochs.
        return config.gamma ** (epoch // config.step_size)
    if config.schedule == "cosine":
        warmup = min(0.05, 1.0 / epochs)
        if progress < warmup:
            return (progress + 1e-3) / (warmup + 1e-3)
        return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
    # onecycle: linear warm-up over the first 30%, then cosine annealing to ~0.
    if progress < 0.3:
        return 0.04 + 0.96 * progress / 0.3
    return 0.5 * (1 + math.cos(math.pi * (progress - 0.3) / 0.7))
