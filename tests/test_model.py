"""TransferModel's heads and run-dir format: format 2 round-trips every head, and format-1 run dirs still load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.model import TransferModel, load_model, save_model


def _model(**options) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone(TINY, pretrained=False), **options).eval()


def test_a_format_1_run_dir_loads_with_its_one_head(tmp_path) -> None:
    model = _model(heads=3)
    save_model(model, tmp_path, {"classes": {"label": ["a", "b", "c"]}, "strategy": "full", "image_size": 32})
    # What a format-1 run dir held: `head.*` weights, `num_classes`, and a plain class list.
    state = {k.replace("heads.label.", "head."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    save_file(state, tmp_path / "model.safetensors")
    meta = json.loads((tmp_path / "model.json").read_text())
    for key in ("heads", "sharing", "domains", "domain_norms_from"):
        del meta[key]
    meta |= {"format_version": 1, "num_classes": 3, "classes": ["a", "b", "c"]}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    loaded, loaded_meta = load_model(tmp_path)
    assert loaded_meta["classes"] == {"label": ["a", "b", "c"]} and loaded.head_names == ["label"]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize(
    "options",
    [
        {"heads": {"item": 4, "category": 2}},
        {"heads": {"item": 4, "category": 2}, "soft_from": 3},
        {"heads": {"fashion": 4, "digits": 3}, "domains": True, "domain_norms_from": 2},
    ],
)
def test_format_2_rebuilds_every_head_and_sharing_mode_from_model_json_alone(tmp_path, options) -> None:
    model = _model(**options)
    with torch.no_grad():  # copies that differ, as after training
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    save_model(model, tmp_path, {"classes": {}, "strategy": "full", "image_size": 32})
    loaded, _ = load_model(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    domain = next(iter(options["heads"])) if options.get("domains") else None
    for name in [*options["heads"]] if domain else [None]:
        ours = model.outputs_from(x, 0, name).logits
        theirs = loaded.outputs_from(x, 0, name).logits
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_domain_batchnorm_normalises_each_domain_with_its_own_layers() -> None:
    model = _model(heads={"a": 3, "b": 3}, domains=True, domain_norms_from=1)
    x = torch.randn(2, 3, 32, 32)
    before = model.outputs_from(x, 0, "b").features
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".norms.a." in name:
                parameter.mul_(2)
    assert torch.equal(model.outputs_from(x, 0, "b").features, before)  # b's layers untouched
    assert not torch.allclose(model.outputs_from(x, 0, "a").features, before)


def test_soft_sharing_runs_each_head_through_its_own_tower() -> None:
    model = _model(heads={"a": 3, "b": 2}, soft_from=4)
    assert list(model.towers) == ["b"] and len(model.towers["b"]) == model.backbone.num_stages - 4
    x = torch.randn(2, 3, 32, 32)
    shared = model.outputs_from(x, 0)
    with torch.no_grad():
        for parameter in model.towers["b"].parameters():
            parameter.add_(0.1)
    moved = model.outputs_from(x, 0)
    assert torch.equal(moved.logits["a"], shared.logits["a"]) and not torch.equal(moved.logits["b"], shared.logits["b"])
    # a cached prefix (stage 2 onwards) gives what the whole pass gives
    prefix = model.backbone.forward_stages(x, 0, 2)
    assert torch.allclose(model.outputs_from(prefix, 2).logits["b"], moved.logits["b"], atol=1e-5)
