"""TransferModel: a Backbone plus a new head per task (or per domain); an Ensemble of such models, fitted to the
same task; both saved as safetensors + JSON, never pickle."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import nn

from transferlab._atomic import write_json_atomic, write_tensors_atomic
from transferlab.backbones import Backbone, Preprocessing, create_backbone
from transferlab.data.types import DEFAULT_TASK
from transferlab.domain_norm import DomainNorm, split_batchnorms
from transferlab.errors import TransferlabError
from transferlab.rundir import RunDir

# 2: named heads (tasks or domains) and the sharing mode. Version-1 run dirs (one head) still load.
FORMAT_VERSION = 2


@dataclass
class Outputs:
    """What one forward pass gives an objective: the logits of each head it ran, in the model's head order,
    and the features the heads read: pooled (of the first head's tower, under soft sharing), then through the
    bottleneck if there is one."""

    logits: dict[str, torch.Tensor]
    features: torch.Tensor


def _head(features: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, classes))


def _neck(features: int, bottleneck: int | None) -> nn.Sequential:
    """A small trained layer between the pooled features and the heads (empty: none). Domain adaptation
    aligns the domains on it: a frozen backbone's features cannot move, and 1,280-d covariances estimated
    from a batch are rank-deficient. No BatchNorm: the weight average keeps parameters, not statistics."""
    return nn.Sequential(nn.Linear(features, bottleneck), nn.ReLU()) if bottleneck else nn.Sequential()


class TransferModel(nn.Module):
    """Backbone → pooled features → (bottleneck) → dropout → a linear head per task.

    `heads` maps each head's name to its number of classes (an int: one head called `label`). The first head is
    the primary: `forward` and `forward_from` give its logits, so single-task code never names a head.

    `forward_from(x, start)` / `outputs_from(x, start)` run the model from backbone stage `start` on, where `x`
    is the output of stage `start - 1` (or the pooled features when `start == num_stages`): this is what lets a
    frozen prefix be computed once and cached.

    Sharing: by default every head reads the one backbone (hard parameter sharing). With `soft_from=K`, stages
    K and above are copied for every head after the first (its tower), while stages below K stay shared; an
    objective term (SoftSharing) keeps the copies close. `domains`: the heads are domains, and a batch of one
    domain runs that domain's head only; with `domain_norms_from=K`, every BatchNorm layer of stages K and
    above is kept per domain (see domain_norm.py).

    `test_time_flip`: predictions average each image and its mirror image. Set for models trained with
    flip augmentation, which have learned that a mirrored image is the same class. `bottleneck`: the width of
    a trained linear + ReLU layer that every head reads (domain adaptation aligns its output).
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: int | Mapping[str, int],
        dropout: float = 0.2,
        test_time_flip: bool = False,
        soft_from: int | None = None,
        domains: bool = False,
        domain_norms_from: int | None = None,
        bottleneck: int | None = None,
    ) -> None:
        super().__init__()
        heads = {DEFAULT_TASK: heads} if isinstance(heads, int) else dict(heads)
        if not heads:
            raise ValueError("a model needs at least one head")
        self.backbone = backbone
        self.dropout = dropout
        self.test_time_flip = test_time_flip
        self.domains = domains
        self.neck = _neck(backbone.feature_dim, bottleneck)
        self.bottleneck = bottleneck
        width = bottleneck or backbone.feature_dim
        self.heads = nn.ModuleDict({name: _head(width, n, dropout) for name, n in heads.items()})
        self.soft_from = soft_from
        towers = list(heads)[1:] if soft_from is not None else []
        self.towers = nn.ModuleDict({name: copy.deepcopy(backbone.stages[soft_from:]) for name in towers})
        if domain_norms_from is not None and not domains:
            raise ValueError("domain-specific BatchNorm needs a head per domain")
        self.domain_norms_from = domain_norms_from
        self._domain_norms: list[DomainNorm] = []
        if domain_norms_from is not None:
            stages = range(domain_norms_from, backbone.num_stages)
            copies = [stage for index in stages for stage in self.stage_copies(index)]
            self._domain_norms = split_batchnorms(copies, list(heads))

    @property
    def head_names(self) -> list[str]:
        return list(self.heads)

    @property
    def new_layers(self) -> nn.ModuleList:
        """The layers added on top of the backbone (bottleneck and heads): always trained, at the head's rate."""
        return nn.ModuleList([self.neck, self.heads])

    @property
    def num_classes(self) -> int:
        """The primary head's number of classes."""
        return self.num_classes_of(self.head_names[0])

    def num_classes_of(self, head: str) -> int:
        return self.linear(head).out_features

    def linear(self, head: str) -> nn.Linear:
        """The linear layer of `head` (after its dropout)."""
        linear = cast(nn.Sequential, self.heads[head])[-1]
        assert isinstance(linear, nn.Linear)
        return linear

    def stage_copies(self, index: int) -> list[nn.Module]:
        """Backbone stage `index` and, under soft sharing, every tower's copy of it."""
        copies: list[nn.Module] = [self.backbone.stages[index]]
        if self.soft_from is not None and index >= self.soft_from:
            copies += [cast(nn.ModuleList, tower)[index - self.soft_from] for tower in self.towers.values()]
        return copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The primary head's logits."""
        primary = self.head_names[0]
        self._activate(primary)
        return self.heads[primary](self.neck(self._features(x, start, primary)))

    def outputs_from(self, x: torch.Tensor, start: int, domain: str | None = None) -> Outputs:
        """Every head's logits (a domain's batch: that domain's head only) and the pooled features."""
        names = [domain] if domain is not None else self.head_names
        self._activate(names[0])
        if self.soft_from is None:
            features = self.neck(self._features(x, start, names[0]))
            return Outputs({name: self.heads[name](features) for name in names}, features)
        shared = self._shared(x, start)  # once for every tower
        pooled = {name: self.neck(self._tower_features(shared, max(start, self.soft_from), name)) for name in names}
        return Outputs({name: self.heads[name](pooled[name]) for name in names}, pooled[names[0]])

    def _activate(self, domain: str) -> None:
        """Point every domain-specific BatchNorm at `domain`'s copy (a model without them: nothing to do)."""
        for norm in self._domain_norms:
            norm.active = domain

    def _features(self, x: torch.Tensor, start: int, head: str) -> torch.Tensor:
        """Pooled features that `head` reads."""
        if self.soft_from is not None:
            return self._tower_features(self._shared(x, start), max(start, self.soft_from), head)
        return self.backbone.pool(self.backbone.forward_stages(x, start)) if start < self.backbone.num_stages else x

    def _shared(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The output of the shared stages below `soft_from`, from stage `start` on."""
        assert self.soft_from is not None
        return self.backbone.forward_stages(x, start, self.soft_from) if start < self.soft_from else x

    def _tower_features(self, x: torch.Tensor, start: int, head: str) -> torch.Tensor:
        """Pooled features of `head`'s own copy of the stages from `start` (>= soft_from) on."""
        if start >= self.backbone.num_stages:
            return x
        assert self.soft_from is not None
        stages = (
            cast(nn.ModuleList, self.towers[head]) if head in self.towers else self.backbone.stages[self.soft_from :]
        )
        for stage in stages[start - self.soft_from :]:
            x = stage(x)
        return self.backbone.pool(x)

    def describe(self) -> dict[str, Any]:
        """What it takes to rebuild this model's structure, as JSON-able data."""
        pre = self.backbone.preprocessing
        return {
            "backbone": self.backbone.name,
            "stage_names": self.backbone.stage_names,
            "feature_dim": self.backbone.feature_dim,
            "heads": {name: self.num_classes_of(name) for name in self.head_names},
            "sharing": {"mode": "hard" if self.soft_from is None else "soft", "soft_from": self.soft_from},
            "domains": self.domains,
            "domain_norms_from": self.domain_norms_from,
            "bottleneck": self.bottleneck,
            "head": {"type": "dropout-linear", "dropout": self.dropout},
            "test_time_flip": self.test_time_flip,
            "preprocessing": {
                "mean": list(pre.mean),
                "std": list(pre.std),
                "input_size": pre.input_size,
                "interpolation": pre.interpolation,
                "crop_pct": pre.crop_pct,
            },
            "weights_source": self.backbone.weights_source,
            "pretraining_images": self.backbone.pretraining_images,
        }


class Ensemble(TransferModel):
    """Members fitted to the same task (ensemble.fit_ensemble), predicting together: their class probabilities
    averaged, handed on as the average's logarithm in place of logits. A softmax of those is the average, so
    whatever reads a fitted TransferModel's outputs (scoring, the test-time flip, predict, the ONNX export)
    reads an ensemble unchanged. It is read, never trained: its layers are the members', and it has no stages
    or heads of its own (TransferModel's constructor, which would build them, is not run)."""

    def __init__(self, members: Sequence[TransferModel]) -> None:
        nn.Module.__init__(self)
        self.members = nn.ModuleList(members)
        first = members[0]
        self.test_time_flip = first.test_time_flip
        self.domains = first.domains
        # The first member's backbone, for its name and preprocessing: not registered again as a layer of its own
        object.__setattr__(self, "backbone", first.backbone)

    @property
    def each(self) -> list[TransferModel]:
        return [cast(TransferModel, member) for member in self.members]

    @property
    def head_names(self) -> list[str]:
        return self.each[0].head_names

    def num_classes_of(self, head: str) -> int:
        return self.each[0].num_classes_of(head)

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return self.outputs_from(x, start).logits[self.head_names[0]]

    def outputs_from(self, x: torch.Tensor, start: int, domain: str | None = None) -> Outputs:
        """The members' probabilities averaged, as log-probabilities; the first member's pooled features."""
        outputs = [member.outputs_from(x, start, domain) for member in self.each]
        tiny = torch.finfo(torch.float32).tiny  # a log of 0 would make the ONNX parity check's difference NaN
        logits = {
            name: torch.stack([each.logits[name].float().softmax(dim=1) for each in outputs])
            .mean(0)
            .clamp_min(tiny)
            .log()
            for name in outputs[0].logits
        }
        return Outputs(logits, outputs[0].features)

    def describe(self) -> dict[str, Any]:
        return self.each[0].describe() | {"members": len(self.members)}


def save_model(model: TransferModel, directory: Path, extra: dict[str, Any]) -> None:
    """Write `model.safetensors` then `model.json` (structure + `extra`: classes, strategy, image size...)."""
    directory = Path(directory)
    write_tensors_atomic(RunDir(directory).weights, model.state_dict())
    write_json_atomic(RunDir(directory).meta, {"format_version": FORMAT_VERSION, **model.describe(), **extra})


def read_meta(directory: Path) -> dict[str, Any]:
    """model.json, with a version-1 file's one head and class list lifted into version 2's shape."""
    path = RunDir(Path(directory)).meta
    if not path.is_file():
        raise TransferlabError(f"{directory} is not a transferlab model: no {path.name} in it")
    meta = json.loads(path.read_text())
    version = meta.get("format_version")
    if version == 1:
        meta["heads"] = {DEFAULT_TASK: meta.pop("num_classes")}
        meta["classes"] = {DEFAULT_TASK: meta["classes"]}
    elif version != FORMAT_VERSION:
        raise TransferlabError(f"{path} has format_version {version}, expected 1 or {FORMAT_VERSION}")
    return meta


def load_model(directory: Path) -> tuple[TransferModel, dict[str, Any]]:
    """Rebuild a saved model (an Ensemble where `model.json` names members) from `model.json` alone, then load
    its weights strictly."""
    meta = read_meta(directory)
    weights = RunDir(Path(directory)).weights
    if not weights.is_file():
        raise TransferlabError(f"{directory} has no {weights.name}: the run ended before its first checkpoint")
    members = meta.get("members")
    model = Ensemble([_built(meta) for _ in range(members)]) if members else _built(meta)
    state = load_file(weights)
    if meta["format_version"] == 1:  # its one head was `head`
        state = {_renamed_v1(key): value for key, value in state.items()}
    model.load_state_dict(state)
    model.eval()
    return model, meta


def _built(meta: dict[str, Any]) -> TransferModel:
    """A model of the structure `meta` describes, its weights random until loaded."""
    backbone = create_backbone(meta["backbone"], pretrained=False)
    backbone.preprocessing = Preprocessing(**{k: _tuple(v) for k, v in meta["preprocessing"].items()})
    backbone.weights_source = meta["weights_source"]
    backbone.pretraining_images = meta.get("pretraining_images")  # not recorded before: not known
    sharing = meta.get("sharing", {})
    return TransferModel(
        backbone,
        meta["heads"],
        dropout=meta["head"]["dropout"],
        test_time_flip=meta.get("test_time_flip", False),
        soft_from=sharing.get("soft_from"),
        domains=meta.get("domains", False),
        domain_norms_from=meta.get("domain_norms_from"),
        bottleneck=meta.get("bottleneck"),
    )


def _renamed_v1(key: str) -> str:
    return f"heads.{DEFAULT_TASK}.{key.removeprefix('head.')}" if key.startswith("head.") else key


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
