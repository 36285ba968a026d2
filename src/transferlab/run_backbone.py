"""A backbone by name, as a user gives one: a registered name, or a transferlab run dir whose trained backbone
becomes the source of the next transfer. Above both the registry and the model: a run dir is read with
`load_model`, which builds its backbone through the registry."""

from __future__ import annotations

from pathlib import Path

from transferlab.backbones import Backbone, create_backbone, registered_names
from transferlab.backbones.base import SourceClassifier
from transferlab.errors import BackboneError
from transferlab.model import load_model
from transferlab.rundir import RunDir


def open_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """The registered backbone `name` (see `create_backbone`), or the backbone of the run dir `name`.

    A run dir (a folder holding `model.json`, not shadowing a registered name) brings its own trained weights
    (with `pretrained=False`, its architecture randomly initialised), and its head becomes the source
    classifier: a fine-tuned model can be the source of a new transfer.
    """
    run_backbone = _run_dir_backbone(name, weights)
    if run_backbone is None:
        if name not in registered_names():
            known = ", ".join(registered_names())
            raise BackboneError(f"unknown backbone '{name}' (nor a run dir with model.json); known: {known}")
        return create_backbone(name, pretrained=pretrained, weights=weights)
    # The structure only (scratch, or the advisor's random baseline): a fresh init of the same architecture.
    return run_backbone if pretrained else create_backbone(run_backbone.name, pretrained=False)


def _run_dir_backbone(name: str, weights: str | Path | None) -> Backbone | None:
    """The trained backbone of run dir `name`, with its head as source classifier; None if `name` is no run dir."""
    if name in registered_names():
        return None
    path = Path(name).expanduser().resolve()
    if not RunDir(path).meta.is_file():
        return None
    if weights is not None:
        raise BackboneError(f"{name} is a run dir and brings its own weights: drop the weights file")
    model, _ = load_model(path)
    backbone = model.backbone
    # The backbone keeps its architecture's registered name, so a model trained on it rebuilds from model.json
    # without this run dir; where its weights came from is recorded here instead.
    backbone.weights_source = f"run:{path}"
    if model.bottleneck is None:
        linear = model.linear(model.head_names[0])
        backbone.source_classifier = SourceClassifier(weight=linear.weight.detach(), bias=linear.bias.detach())
    else:  # a head that reads a bottleneck is no linear classifier of the pooled features: none to offer
        backbone.source_classifier = None
    return backbone.train()  # like every other backbone the factory returns; load_model left it in eval mode
