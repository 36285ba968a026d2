"""Domain-specific BatchNorm for multi-domain learning: one network, and each domain its own normalisation.

Digits, clothes and faces have different image statistics. Sharing every weight but the BatchNorm layers
lets each domain keep its own scale and shift (and, where statistics are re-estimated, its own statistics),
at a few thousand parameters per domain: the cheapest of the per-domain adapters (Bilen and Vedaldi, 2017;
Rebuffi et al., NeurIPS 2017 use BatchNorm per domain beside their residual adapters).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class DomainNorm(nn.Module):
    """A copy of one BatchNorm layer per domain; `active` says which one normalises."""

    def __init__(self, norm: nn.Module, domains: Sequence[str]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({name: copy.deepcopy(norm) for name in domains})
        self.active = domains[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.active](x)


def split_batchnorms(modules: Sequence[nn.Module], domains: Sequence[str]) -> list[DomainNorm]:
    """Replace every BatchNorm layer inside `modules` by a DomainNorm over `domains`; returns them."""
    replaced = []
    for module in modules:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    split = DomainNorm(child, domains)
                    setattr(parent, name, split)
                    replaced.append(split)
    return replaced
