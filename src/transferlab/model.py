"""TransferModel: a Backbone plus a new head for the target classes; saved as safetensors + JSON, never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from transferlab._atomic import write_json_atomic, write_tensors_atomic
from transferlab.backbones import Backbone, Preprocessing, create_backbone
from transferlab.errors import TransferlabError

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class TransferModel(nn.Module):
    """Backbone → pooled features → dropout → linear head over the target classes.

    `forward_from(x, start)` runs the model from backbone stage `start` on, where `x` is the output of stage
    `start - 1` (or the pooled features when `start == num_stages`): this is what lets a frozen prefix be
    computed once and cached.

    `test_time_flip`: predictions average each image and its mirror image. Set for models trained with
    flip augmentation, which have learned that a mirrored image is the same class.
    """

    def __init__(
        self, backbone: Backbone, num_classes: int, dropout: float = 0.2, test_time_flip: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = dropout
        self.test_time_flip = test_time_flip
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if start < self.backbone.num_stages:
            x = self.backbone.pool(self.backbone.forward_stages(x, start))
        return self.head(x)

    def describe(self) -> dict[str, Any]:
        """What it takes to rebuild this model's structure, as JSON-able data."""
        pre = self.backbone.preprocessing
        return {
            "backbone": self.backbone.name,
            "stage_names": self.backbone.stage_names,
            "feature_dim": self.backbone.feature_dim,
            "num_classes": self.num_classes,
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
        }


def save_model(model: TransferModel, directory: Path, extra: dict[str, Any]) -> None:
    """Write `model.safetensors` then `model.json` (structure + `extra`: classes, strategy, image size...)."""
    directory = Path(directory)
    write_tensors_atomic(directory / WEIGHTS_FILE, model.state_dict())
    write_json_atomic(directory / META_FILE, {"format_version": FORMAT_VERSION, **model.describe(), **extra})


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise TransferlabError(f"{directory} is not a transferlab model: no {META_FILE} in it")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise TransferlabError(f"{path} has format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return meta


def load_model(directory: Path) -> tuple[TransferModel, dict[str, Any]]:
    """Rebuild a saved model from `model.json` alone, then load its weights strictly."""
    meta = read_meta(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise TransferlabError(f"{directory} has no {WEIGHTS_FILE}: the run ended before its first checkpoint")
    backbone = create_backbone(meta["backbone"], pretrained=False)
    backbone.preprocessing = Preprocessing(**{k: _tuple(v) for k, v in meta["preprocessing"].items()})
    backbone.weights_source = meta["weights_source"]
    flip = meta.get("test_time_flip", False)
    model = TransferModel(backbone, meta["num_classes"], dropout=meta["head"]["dropout"], test_time_flip=flip)
    model.load_state_dict(load_file(weights))
    model.eval()
    return model, meta


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
