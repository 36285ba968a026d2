"""Backbones: pretrained convolutional bases by timm name, cut into ordered stages (see `base.Backbone`)."""

from transferlab.backbones.base import Backbone, Preprocessing, SourceClassifier
from transferlab.backbones.registry import BackboneInfo, create_backbone, list_backbones, registered_names
from transferlab.backbones.weights import available_offline

__all__ = [
    "Backbone",
    "BackboneInfo",
    "Preprocessing",
    "SourceClassifier",
    "available_offline",
    "create_backbone",
    "list_backbones",
    "registered_names",
]
