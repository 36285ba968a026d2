"""How far apart the domains are as training moves the features: a callback that measures it every epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from transferlab.adaptation.shift import classify_domains
from transferlab.inference import evaluating
from transferlab.model import TransferModel
from transferlab.train.batches import Batches
from transferlab.train.loop import Callback, Trainer

# Held-out images per domain the measure reads, the folds it cross-fits over, and one fixed C (the middle of
# shift.py's candidates): a steady reading, comparable from epoch to epoch, for well under a second. Five
# candidate Cs on 1,280-wide features took 3-4 s per epoch, half of a 32 px benchmark epoch.
MAX_IMAGES = 300
FOLDS = 3
REGULARIZATION = 1e-2


class DomainGap(Callback):
    """After each epoch, the proxy A-distance between the source's and the target's held-out images, on the
    features the heads read (of the model that is validated and kept): a fresh domain classifier, so unlike a
    DANN discriminator's training accuracy it reads the same for every method. It adds `a_distance` to the
    epoch's metrics, for the callbacks after it (the log, the progress line): place it first."""

    def __init__(self, source: Batches, target: Batches, max_images: int = MAX_IMAGES) -> None:
        self.source = source
        self.target = target
        self.max_images = max_images

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        model = trainer.eval_model
        source, target = (features(model, batches, self.max_images) for batches in (self.source, self.target))
        folds = min(FOLDS, len(source), len(target))
        measured = classify_domains(source, target, folds=folds, regularizations=(REGULARIZATION,))
        metrics["a_distance"] = measured.proxy_a_distance


@torch.no_grad()
def features(model: TransferModel, batches: Batches, limit: int) -> np.ndarray:
    """The features the heads read, of the first `limit` images of `batches`, in eval mode."""
    chunks, count = [], 0
    with evaluating(model):
        for batch in batches.batches():
            chunks.append(model.outputs_from(batch.x, batch.start).features.float().cpu())
            count += len(batch.x)
            if count >= limit:
                break
    return torch.cat(chunks)[:limit].numpy()
