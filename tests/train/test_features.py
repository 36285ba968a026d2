"""The frozen-prefix cache: the frozen backbone runs once per image and view, never once per epoch."""

from __future__ import annotations

import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import CachedBatches, ImageBatches
from transferlab.train.features import prefix_outputs
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer


def _setup(digits, views: int, augment: str = "light"):
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    data = prepare(load_source(digits, per_class=30), 32)
    config = FitConfig(strategy="head", epochs=3, lr=1e-2, image_size=32, batch_size=16, augment=augment)
    return model, data, config.updated(cached_views=views)


def test_head_runs_the_backbone_once_per_image_and_view_not_per_epoch(digits, tmp_path) -> None:
    model, data, config = _setup(digits, views=2)
    seen = []
    model.backbone.stages[0].register_forward_hook(lambda _m, inputs, _out: seen.append(len(inputs[0])))
    strategy = parse_strategy("head")
    train, val, _ = make_batches(model, strategy, config, data, "cpu")
    n_train, n_val = len(data.splits["train"].labels), len(data.splits["val"].labels)
    # two augmented views of each training image and one clean view of each validation image (one-image
    # passes size the cache and show the BatchNorm fold its example)
    cached = 2 * n_train + n_val
    assert sum(n for n in seen if n > 1) == cached
    Trainer(model, strategy, config, train, val, tmp_path).fit()
    assert sum(n for n in seen if n > 1) == cached  # three epochs of training and validation ran from the cache


def test_cached_views_are_distinct_augmentations_and_validation_is_clean(digits) -> None:
    model, data, config = _setup(digits, views=2)
    train, val, note = make_batches(model, parse_strategy("head"), config, data, "cpu")
    assert isinstance(train, CachedBatches) and train.views.shape[:2] == (2, len(data.splits["train"].labels))
    assert not torch.allclose(train.views[0], train.views[1])
    normalizer = Normalizer(model.backbone.preprocessing)
    clean = prefix_outputs(model, data.splits["val"].images, model.backbone.num_stages, normalizer)
    assert isinstance(val, CachedBatches) and torch.equal(val.views[0], clean)
    assert "2 view(s) per image ('light' augmentation)" in note


def test_without_augmentation_one_clean_view_and_zero_views_means_no_cache(digits) -> None:
    model, data, config = _setup(digits, views=4, augment="none")
    train, _, _ = make_batches(model, parse_strategy("head"), config, data, "cpu")
    normalizer = Normalizer(model.backbone.preprocessing)
    clean = prefix_outputs(model, data.splits["train"].images, model.backbone.num_stages, normalizer)
    assert isinstance(train, CachedBatches) and train.views.shape[0] == 1 and torch.equal(train.views[0], clean)
    model, data, config = _setup(digits, views=0)
    train, _, note = make_batches(model, parse_strategy("head"), config, data, "cpu")
    assert isinstance(train, ImageBatches) and train.augment == PRESETS["light"] and "on the fly" in note


def test_strong_augmentation_keeps_a_clean_view_beside_the_augmented_ones(digits) -> None:
    model, data, config = _setup(digits, views=2, augment="strong")
    train, _, note = make_batches(model, parse_strategy("head"), config, data, "cpu")
    normalizer = Normalizer(model.backbone.preprocessing)
    clean = prefix_outputs(model, data.splits["train"].images, model.backbone.num_stages, normalizer)
    assert isinstance(train, CachedBatches) and train.views.shape[0] == 3
    assert torch.equal(train.views[0], clean) and not torch.allclose(train.views[1], clean)
    assert "the first clean" in note
