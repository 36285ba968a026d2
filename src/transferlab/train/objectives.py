"""What training minimises, as loss modules: the loop never changes, only the objective it is given.

An Objective turns one batch's model outputs into the scalar to minimise and the named parts to log. Every
capability that changes *what* is learned (several tasks, soft parameter sharing, later domain adaptation or
sample weights) is an Objective, or a term added to one with `Total`:

    class Coral(Objective):
        def forward(self, outputs, batch, progress):
            n = batch.n_source
            loss = coral(outputs.features[:n], outputs.features[n:])
            return loss, {"transfer/coral": loss.detach()}

    trainer = Trainer(model, strategy, config, train, val, run_dir, objective=Total([CrossEntropy(), Coral()]))

An objective's own parameters (learned task weights, a discriminator) are trained in an optimizer group of
their own, without weight decay, and are saved in the resumable checkpoint with the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import WEIGHTINGS
from transferlab.model import Outputs, TransferModel
from transferlab.train.batches import Batch

Parts = dict[str, torch.Tensor]
GRADNORM_ALPHA = 1.5  # GradNorm's restoring force (Chen et al., ICML 2018; LibMTL's default)


class Objective(nn.Module):
    """`forward(outputs, batch, progress)` → (loss, parts). `progress` is the share of training done, in [0, 1]:
    coefficients that ramp over training read it, so a resumed run continues them exactly."""

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        raise NotImplementedError


class CrossEntropy(Objective):
    """One head's cross-entropy with label smoothing, over the labelled rows (a domain-adaptation batch's target
    rows are labelled -1): the single-task objective."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        (logits,) = outputs.logits.values()
        loss = F.cross_entropy(logits, batch.y, ignore_index=-1, label_smoothing=self.label_smoothing)
        if batch.mix is None:
            return loss, {}
        mixed = F.cross_entropy(logits, batch.mix.partner, ignore_index=-1, label_smoothing=self.label_smoothing)
        return batch.mix.share * loss + (1 - batch.mix.share) * mixed, {}


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over the labelled rows (label >= 0); 0, with zero gradient, when there are none.

    `cross_entropy` with every target ignored divides 0 by 0: NaN, which would stop the run.
    """
    total = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum", label_smoothing=label_smoothing)
    return total / (labels >= 0).sum().clamp(min=1)


class MultiTask(Objective):
    """The heads' masked cross-entropies, combined by a weighting:

    - `equal`: their sum;
    - `uncertainty`: Σ (exp(-s_t) L_t + s_t) / 2 with a learned log-variance s_t per head (Kendall, Gal and
      Cipolla, CVPR 2018; the form of LibMTL's UW): a task whose loss stays high is weighted down;
    - `gradnorm`: Σ w_t L_t with learned weights w = T·softmax(a) (Chen et al., ICML 2018, as LibMTL
      parametrises it), trained so that each task's gradient on the shared features, ||∇ w_t L_t||, moves
      towards the mean norm × (the task's loss ratio L_t / L_t(first batch), over the mean ratio)^α: a task
      that has learned less gets a larger gradient. The norms are taken on the pooled features the heads share
      (LibMTL's `rep_grad`), which costs a backward pass through the heads alone, not the backbone.

    A head without a label in the batch adds nothing, and its weight gets no gradient. Parts: each head's loss
    (NaN where it had no label: not measured, left out of the epoch's mean) and weight.
    """

    first_losses: torch.Tensor | None

    def __init__(self, heads: Sequence[str], weighting: str = "equal", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        self.index = {name: i for i, name in enumerate(heads)}
        self.weighting = weighting
        self.label_smoothing = label_smoothing
        self.log_vars = nn.Parameter(torch.zeros(len(heads))) if weighting == "uncertainty" else None
        self.scale_logits = nn.Parameter(torch.zeros(len(heads))) if weighting == "gradnorm" else None
        # Each task's first measured loss, the reference of its loss ratio: a buffer, so a resumed run keeps it.
        self.register_buffer(
            "first_losses", torch.full((len(heads),), torch.nan) if self.scale_logits is not None else None
        )

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        names = list(outputs.logits)
        targets = batch.targets
        losses = torch.stack(
            [
                masked_cross_entropy(outputs.logits[name], targets[:, k], self.label_smoothing)
                for k, name in enumerate(names)
            ]
        )
        present = (targets >= 0).any(0).to(losses.dtype)
        measured = torch.where(present > 0, losses.detach(), torch.nan)
        parts = {f"loss/{name}": measured[k] for k, name in enumerate(names)}
        rows = [self.index[name] for name in names]
        if self.log_vars is not None:
            log_vars = self.log_vars[rows]
            loss = ((losses * torch.exp(-log_vars) + log_vars) / 2 * present).sum()
            weights = torch.exp(-self.log_vars.detach()) / 2
        elif self.scale_logits is not None:
            loss = self._gradnorm(losses, present, outputs.features, rows)
            weights = len(self.index) * torch.softmax(self.scale_logits.detach(), 0)
        else:
            return (losses * present).sum(), parts
        return loss, parts | {f"weight/{name}": weights[i] for name, i in self.index.items()}

    def _gradnorm(
        self, losses: torch.Tensor, present: torch.Tensor, features: torch.Tensor, rows: list[int]
    ) -> torch.Tensor:
        """Σ w_t L_t for the model, plus GradNorm's balancing loss for the weights alone (its value left out, so
        the logged loss stays the tasks' weighted sum)."""
        assert self.scale_logits is not None and self.first_losses is not None
        weights = (len(self.index) * torch.softmax(self.scale_logits, 0))[rows]
        loss = (weights.detach() * losses * present).sum()
        on = (present > 0).nonzero().flatten().tolist()
        with torch.no_grad():
            first = self.first_losses[rows]
            unset = first.isnan() & (present > 0)
            self.first_losses[torch.tensor(rows)[unset]] = losses.detach()[unset]
        if not (features.requires_grad and len(on) > 1):
            return loss  # no shared trained layer (a frozen backbone), or fewer than two tasks: nothing to balance
        norms = (
            torch.stack([torch.autograd.grad(losses[k], features, retain_graph=True)[0].norm() for k in on])
            * weights[on]
        )
        ratios = losses.detach()[on] / self.first_losses[[rows[k] for k in on]]
        goal = norms.detach().mean() * (ratios / ratios.mean()) ** GRADNORM_ALPHA
        balance = (norms - goal).abs().sum()
        return loss + balance - balance.detach()


class SoftSharing(Objective):
    """λ Σ_t ||θ_t − θ̄||² over the corresponding parameters of every head's copy of the unshared stages
    (Duong et al., ACL 2015): λ = 0 trains independent models, a large λ approaches hard sharing.

    Its gradient on head t's copy is 2λ(θ_t − θ̄) (the deviations sum to zero). Part: `soft/distance`, the sum
    of squared distances to the mean, so the log shows how far the copies have drifted apart.
    """

    def __init__(self, model: TransferModel, weight: float) -> None:
        super().__init__()
        if model.soft_from is None:
            raise ValueError("soft sharing needs a model built with soft_from (a tower per head)")
        self.weight = weight
        # Plain lists, not registered: these are the model's parameters, trained and saved with the model.
        self._groups: list[list[torch.Tensor]] = [
            list(parameters)
            for index in range(model.soft_from, model.backbone.num_stages)
            for parameters in zip(*(copy.parameters() for copy in model.stage_copies(index)), strict=True)
        ]

    def distance(self) -> torch.Tensor:
        """Σ over corresponding parameters of Σ_t ||θ_t − θ̄||²."""
        if not self._groups:  # every stage frozen and shared: nothing to keep close
            return torch.zeros(())
        stacks = [torch.stack(group) for group in self._groups]
        return torch.stack([(stack - stack.mean(0)).pow(2).sum() for stack in stacks]).sum()

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        distance = self.distance()
        return self.weight * distance, {"soft/distance": distance.detach()}


class Total(Objective):
    """The sum of several objectives' losses; their parts side by side."""

    def __init__(self, terms: Sequence[Objective]) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)

    def forward(self, outputs: Outputs, batch: Batch, progress: float) -> tuple[torch.Tensor, Parts]:
        loss, parts = self.terms[0](outputs, batch, progress)
        for term in self.terms[1:]:
            more, more_parts = term(outputs, batch, progress)
            loss, parts = loss + more, parts | more_parts
        return loss, parts
