"""What trains, at which learning rate, and how BatchNorm behaves — stated once, as data.

The trainer never asks "is this the head strategy?". It asks a Strategy which stages are frozen, which
parameter groups to optimise, and puts the model in train mode through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from transferlab.config import check_strategy_name
from transferlab.errors import ConfigError
from transferlab.model import TransferModel


@dataclass(frozen=True)
class Strategy:
    """One way to fit a pretrained backbone to a new task.

    - `frozen_stages`: how many leading backbone stages are frozen (weights and BatchNorm statistics fixed).
      `None` means all of them: only the head trains.
    - `pretrained`: start from the pretrained weights (False: the structure only, random initialisation).
    - `backbone_lr_ratio`: learning-rate multiplier of trained backbone stages against the head's.
    - `warm_start`: fit the head on frozen features before the backbone trains (linear probe, then fine-tune).
    - `adapt_batchnorm`: trained stages normalise with batch statistics while training and have their running
      statistics re-estimated on the target data before evaluation. False keeps the source statistics fixed
      everywhere (trained stages still learn their affine weights).

    Pretrained strategies keep the source statistics: a small target's batches estimate them worse than the
    source's millions of images did, and the naive loop that leaves BatchNorm in train mode loses most
    (benchmarks/README.md). `scratch` has no source statistics worth keeping, so it adapts them.
    """

    name: str
    frozen_stages: int | None
    pretrained: bool = True
    backbone_lr_ratio: float = 0.1
    warm_start: bool = True
    adapt_batchnorm: bool = False

    def num_frozen(self, model: TransferModel) -> int:
        return self.frozen_of(model.backbone.num_stages)

    def frozen_of(self, total: int) -> int:
        """How many of `total` stages this strategy freezes."""
        return total if self.frozen_stages is None else min(self.frozen_stages, total)

    def check(self, model: TransferModel) -> None:
        """Refuse a freeze depth that the backbone does not have."""
        total = model.backbone.num_stages
        if self.frozen_stages is not None and not 0 <= self.frozen_stages < total:
            names = ", ".join(f"{i}={n}" for i, n in enumerate(model.backbone.stage_names, 1))
            raise ConfigError(
                f"{self.name}: {model.backbone.name} has {total} stages ({names}); "
                f"partial:K needs 1 <= K < {total} (use 'head' to freeze them all)"
            )

    def trains_backbone(self, model: TransferModel) -> bool:
        return self.num_frozen(model) < model.backbone.num_stages

    def freeze(self, model: TransferModel) -> None:
        """Turn gradients off for the frozen prefix, on for everything else."""
        frozen = self.num_frozen(model)
        for index in range(model.backbone.num_stages):
            for stage in model.stage_copies(index):
                stage.requires_grad_(index >= frozen)
        model.new_layers.requires_grad_(True)

    def set_train_mode(self, model: TransferModel) -> None:
        """model.train(), except that frozen stages (and, without BN adaptation, every BatchNorm) stay in eval."""
        model.train()
        for index in range(self.num_frozen(model)):
            for stage in model.stage_copies(index):
                stage.eval()
        if not self.adapt_batchnorm:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def param_groups(self, model: TransferModel, lr: float) -> list[dict]:
        """New layers (bottleneck and heads) at `lr`, trained backbone stages (every copy, under soft sharing)
        at `lr * backbone_lr_ratio`; frozen stages are left out."""
        trained = range(self.num_frozen(model), model.backbone.num_stages)
        backbone = [p for index in trained for stage in model.stage_copies(index) for p in stage.parameters()]
        groups = [{"params": list(model.new_layers.parameters()), "lr": lr, "name": "head"}]
        if backbone:
            groups.append({"params": backbone, "lr": lr * self.backbone_lr_ratio, "name": "backbone"})
        return groups

    def describe(self, model: TransferModel) -> str:
        frozen = self.num_frozen(model)
        names = model.backbone.stage_names
        if frozen == len(names):
            return "head only: every backbone stage frozen"
        kept = f"stages {names[0]}..{names[frozen - 1]} frozen, " if frozen else ""
        init = "pretrained" if self.pretrained else "random init"
        return f"{kept}{names[frozen]}..{names[-1]} and head trained ({init}, backbone lr x{self.backbone_lr_ratio})"


def parse_strategy(name: str) -> Strategy:
    """Parse `head`, `partial:K`, `full` or `scratch` into a Strategy (`auto` is resolved by the advisor)."""
    check_strategy_name(name)
    if name == "head":
        return Strategy("head", frozen_stages=None)
    if name == "full":
        return Strategy("full", frozen_stages=0)
    if name == "scratch":
        # Random weights have nothing to preserve: every layer learns at the full rate.
        return Strategy(
            "scratch", frozen_stages=0, pretrained=False, backbone_lr_ratio=1.0, warm_start=False, adapt_batchnorm=True
        )
    match = re.fullmatch(r"partial:(\d+)", name)
    if match:
        return Strategy(name, frozen_stages=int(match.group(1)))
    raise ConfigError("strategy 'auto' is chosen by the advisor: parse the strategy it chose")
