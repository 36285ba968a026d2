"""How far apart the domains are as training moves the features, and what the source's validation loss says
about the target's: one callback that measures both every epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.adaptation.shift import classify_domains, density_ratio, dev_risk
from transferlab.inference import evaluating, without_batchnorm
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
    """After each epoch, on the features the heads read (of the model that is validated and kept), a fresh
    classifier of the source's against the target's held-out images. It adds to the epoch's metrics, for the
    callbacks after it (the log, the progress line, the best checkpoint): place it first.

    - `a_distance`: its proxy A-distance; unlike a DANN discriminator's training accuracy, it reads the same
      for every method.
    - `dev_loss`, `dev_loss_se`: the target's loss as Deep Embedded Validation estimates it, from the source
      validation images' losses weighted by the classifier's (cross-fitted) density ratios (shift.dev_risk).
    """

    def __init__(self, source: Batches, target: Batches, max_images: int = MAX_IMAGES) -> None:
        self.source = source
        self.target = target
        self.max_images = max_images

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        model = trainer.eval_model
        source, losses = features_and_losses(model, self.source, self.max_images)
        target, _ = features_and_losses(model, self.target, self.max_images)
        folds = min(FOLDS, len(source), len(target))
        measured = classify_domains(source, target, folds=folds, regularizations=(REGULARIZATION,))
        metrics["a_distance"] = measured.proxy_a_distance
        metrics["dev_loss"], metrics["dev_loss_se"] = dev_risk(losses, density_ratio(measured))


@torch.no_grad()
def features_and_losses(model: TransferModel, batches: Batches, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The features the heads read, of the first `limit` images of `batches`, in eval mode, and each image's
    cross-entropy (NaN for an unlabelled image: a target's)."""
    features, losses, count = [], [], 0
    fast: TransferModel | None = None
    with evaluating(model):
        for batch in batches.batches():
            fast = fast or without_batchnorm(model, "outputs_from", batch.x[:1], batch.start)
            outputs = fast.outputs_from(batch.x, batch.start)
            labels, logits = batch.targets[:, 0], outputs.logits[model.head_names[0]]
            loss = nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            features.append(outputs.features.float().cpu())
            losses.append(torch.where(labels >= 0, loss, torch.nan).double().cpu())
            count += len(batch.x)
            if count >= limit:
                break
    return torch.cat(features)[:limit].numpy(), torch.cat(losses)[:limit].numpy()
