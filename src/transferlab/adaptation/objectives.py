"""Domain adaptation as loss modules: the source's cross-entropy plus a transfer term over side-by-side source
and target batches (`Batch.n_source` splits them). The training loop is the one every fit uses.

Transfer terms, each `forward(pair, progress)` → (loss, parts):

- `Coral`: the distance between the domains' feature covariances (Sun and Saenko, ECCV 2016 workshops);
- `DomainAdversarial`: a domain discriminator behind a gradient reversal layer (Ganin et al., JMLR 2016), whose
  coefficient ramps with training progress, so that a resumed run continues it exactly;
Two stronger modern methods were tried and removed, since neither earned its place on
benchmarks/adaptation.py's Fashion-MNIST-M (12 epochs, partial:4, 32 px; target accuracy, seeds 0 and 1):
source alone 36.0 / 34.3, DANN 44.3 / 41.4, CDAN (Long et al., NeurIPS 2018) 37.8 / 36.7, Minimum Class
Confusion (Jin et al., ECCV 2020) 28.9 (seed 0). Both lean on the target's predictions, which start at 35%
right here: conditioning on them, or sharpening them, amplifies their mistakes.

Source images are weighted per image (importance weights from a domain classifier) or per class (PADA: by how
much the target predicts each class, Cao et al., ECCV 2018), inside `Adaptation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.model import Outputs
from transferlab.train.batches import Batch
from transferlab.train.objectives import Objective, Parts

# How fast PADA's class weights follow the target's predictions: about the last 100 steps count.
CLASS_WEIGHT_MOMENTUM = 0.99


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """The identity going forward; going back, the gradient times `-coefficient`."""
    return _ReverseGradient.apply(x, coefficient)


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """2 / (1 + exp(-γ p)) − 1: 0 at the start, when the features are still poor, rising to about 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||C_s − C_t||²_F / 4d²: the squared distance between the two feature sets' covariances [N, d]."""
    dim = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * dim * dim)


@dataclass
class Pair:
    """One step's outputs, split by domain; `source_weights` sum to the number of source rows."""

    source_features: torch.Tensor
    target_features: torch.Tensor
    source_weights: torch.Tensor


class TransferTerm(nn.Module):
    """A loss that pulls the domains together; `name` prefixes its logged parts."""

    name = "transfer"

    def forward(self, pair: Pair, progress: float) -> tuple[torch.Tensor, Parts]:
        raise NotImplementedError


class Coral(TransferTerm):
    name = "coral"

    def forward(self, pair: Pair, progress: float) -> tuple[torch.Tensor, Parts]:
        loss = coral(pair.source_features, pair.target_features)
        return loss, {"transfer/coral": loss.detach()}


class DomainAdversarial(TransferTerm):
    """A discriminator tells source (1) from target (0) features; the reversed gradient teaches the features to
    defeat it. Dropout, not BatchNorm: a BatchNorm discriminator overpowers the features (TLlib issue #267).

    Parts: its loss, its accuracy (near 0.5: the domains look alike to it) and the proxy A-distance
    2 (2 acc − 1) of that accuracy, a training-time reading of how far apart the domains still are.
    """

    name = "dann"

    def __init__(self, features: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.discriminator = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def inputs(self, pair: Pair) -> torch.Tensor:
        """What the discriminator reads: both domains' features, the source's first."""
        return torch.cat([pair.source_features, pair.target_features])

    def forward(self, pair: Pair, progress: float) -> tuple[torch.Tensor, Parts]:
        scores = self.discriminator(reverse_gradient(self.inputs(pair), dann_coefficient(progress))).squeeze(1)
        n = len(pair.source_features)
        is_source = torch.zeros_like(scores)
        is_source[:n] = 1
        # Each domain counts half; the source's rows by their weights (PADA's classes absent from the target
        # should not be aligned with it).
        weights = torch.cat([pair.source_weights / n, torch.ones_like(scores[n:]) / (len(scores) - n)]) / 2
        loss = F.binary_cross_entropy_with_logits(scores, is_source, weight=weights, reduction="sum")
        accuracy = ((scores > 0).float() == is_source).float().mean()
        return loss, {
            f"transfer/{self.name}": loss.detach(),
            "domain/accuracy": accuracy,
            "domain/a_distance": 2 * (2 * accuracy - 1),
        }


class Adaptation(Objective):
    """The source's cross-entropy + `weight` × a transfer term.

    - `image_weights`: one weight per source training image (mean 1), read by `Batch.index`;
    - `class_weighting`: PADA. Each source class is weighted by the target's mean predicted probability of it,
      over about the last 100 steps, divided by the largest: classes the target lacks fade out of both the
      source loss and the alignment. The running mean is a buffer, saved with the checkpoint.
    """

    image_weights: torch.Tensor | None
    class_mass: torch.Tensor | None

    def __init__(
        self,
        transfer: TransferTerm | None,
        weight: float = 1.0,
        label_smoothing: float = 0.0,
        image_weights: torch.Tensor | None = None,
        class_weighting: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.transfer = transfer
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.register_buffer("image_weights", image_weights, persistent=False)
        if class_weighting and num_classes is None:
            raise ValueError("class weighting needs the number of classes")
        mass = torch.full((num_classes or 0,), 1.0 / (num_classes or 1)) if class_weighting else None
        self.register_buffer("class_mass", mass)

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        n = len(batch.y) if batch.n_source is None else batch.n_source  # None: source images alone
        (logits,) = outputs.logits.values()
        labels = batch.y[:n]
        weights = torch.ones(n, device=logits.device)
        if self.image_weights is not None and batch.index is not None:
            weights = weights * self.image_weights[batch.index.to(self.image_weights.device)].to(logits.device)
        parts: Parts = {}
        if self.class_mass is not None and n < len(logits):
            with torch.no_grad():
                seen = F.softmax(logits[n:], dim=1).mean(0)
                self.class_mass.mul_(CLASS_WEIGHT_MOMENTUM).add_(seen, alpha=1 - CLASS_WEIGHT_MOMENTUM)
            class_weights = self.class_mass / self.class_mass.max()
            weights = weights * class_weights[labels]
            parts["weight/smallest_class"] = class_weights.min()
        weights = weights * n / weights.sum().clamp(min=1e-12)
        losses = F.cross_entropy(logits[:n], labels, reduction="none", label_smoothing=self.label_smoothing)
        source_loss = (losses * weights).mean()
        parts["loss/source"] = source_loss.detach()
        if self.transfer is None or n == len(logits):
            return source_loss, parts
        pair = Pair(outputs.features[:n], outputs.features[n:], weights.detach())
        transfer_loss, transfer_parts = self.transfer(pair, progress)
        return source_loss + self.weight * transfer_loss, parts | transfer_parts
