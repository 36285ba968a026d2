"""The heads' warm start: trained on the pretrained backbone's pooled features, which it reads from the advisor
where the advisor already computed them for the same images."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.conftest import TINY
from transferlab.advisor import advise
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.defaults import resolve
from transferlab.fitdata import FitData
from transferlab.fitting import fit
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train import features
from transferlab.train.objectives import CrossEntropy
from transferlab.train.warmup import warm_start_head


def _backbone_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of stages of each frozen-prefix pass made from now on (all of them: the pooled features)."""
    calls: list[int] = []
    original = features.prefix_outputs

    def counted(model, images, frozen, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(frozen)
        return original(model, images, frozen, *args, **kwargs)

    monkeypatch.setattr(features, "prefix_outputs", counted)
    return calls


def test_the_warm_start_reads_the_advisors_features_and_trains_the_same_heads(
    digits, tiny_weights, tmp_path, monkeypatch
) -> None:
    data = prepare(load_source(digits, per_class=40), 32)
    backbone = create_backbone(TINY, weights=tiny_weights)
    final = advise(backbone, data).final_features
    assert final is not None
    torch.manual_seed(0)
    reused = TransferModel(backbone, 3)
    computed = copy.deepcopy(reused)
    untrained = copy.deepcopy(reused.heads.state_dict())
    strategy = parse_strategy("full")
    config = resolve(FitConfig(backbone=TINY, strategy="full", image_size=32), strategy, 32, 96)
    passes = _backbone_passes(monkeypatch)

    accuracy = warm_start_head(reused, config, FitData({"": data}), "cpu", tmp_path, CrossEntropy(0.1), final)
    assert passes == []  # no pass over the images: the advisor's features served
    assert accuracy == warm_start_head(computed, config, FitData({"": data}), "cpu", tmp_path, CrossEntropy(0.1))
    assert passes == [backbone.num_stages, backbone.num_stages]  # computed: train and val, the whole backbone
    for name, weight in reused.heads.state_dict().items():
        torch.testing.assert_close(weight, computed.heads.state_dict()[name], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(weight, untrained[name])  # and the heads did learn


def test_features_of_other_images_are_not_read(digits, tiny_weights) -> None:
    data = prepare(load_source(digits, per_class=40), 32)
    final = advise(create_backbone(TINY, weights=tiny_weights), data).final_features
    assert final is not None
    train = data.splits["train"].images
    assert final.of("train", train) is not None
    assert final.of("train", train.clone()) is None  # the same pixels, but not the images measured
    assert final.of("val", train) is None  # another split's images

    more = prepare(load_source(digits, per_class=150), 32)  # beyond the advisor's 100 per class: a sample
    assert (
        advise(create_backbone(TINY, weights=tiny_weights), more).final_features.of(  # type: ignore[union-attr]
            "train", more.splits["train"].images
        )
        is None
    )


def test_fit_auto_runs_the_backbone_over_the_training_images_once(digits, tiny_weights, tmp_path, monkeypatch) -> None:
    passes = _backbone_passes(monkeypatch)
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), strategy="auto", image_size=32, epochs=1, per_class=40)
    fit(digits, config, tmp_path / "run", quiet=True)
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    assert advice["strategy"] != "head"  # the backbone trains, so the heads were warm-started
    assert create_backbone(TINY, pretrained=False).num_stages not in passes  # ... on the advisor's features
