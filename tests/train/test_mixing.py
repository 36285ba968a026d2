"""Mixup and CutMix: what a mixed batch holds, and the loss the objective takes of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transferlab.config import FitConfig
from transferlab.errors import ConfigError
from transferlab.model import Outputs
from transferlab.train.batches import Batch
from transferlab.train.mixing import Mixed, mix_batch
from transferlab.train.objectives import CrossEntropy


def _labelled_images(n: int = 16, size: int = 12) -> Batch:
    """Images whose every pixel is their label: a mixed image shows how much of it came from which image."""
    labels = torch.arange(n) % 5
    return Batch(labels.float().view(n, 1, 1, 1).expand(n, 3, size, size).clone(), labels)


def test_mixup_blends_each_image_with_its_partner_in_the_share_given() -> None:
    torch.manual_seed(0)
    batch = _labelled_images()
    mixed = mix_batch(batch, "mixup", alpha=0.4)
    assert mixed.mix is not None and 0 < mixed.mix.share < 1
    expected = mixed.mix.share * batch.y + (1 - mixed.mix.share) * mixed.mix.partner
    assert torch.allclose(mixed.x, expected.float().view(-1, 1, 1, 1).expand_as(batch.x))
    assert sorted(mixed.mix.partner.tolist()) == sorted(batch.y.tolist())  # a shuffle of the batch's own labels
    assert batch.mix is None and batch.x.unique().tolist() == [0, 1, 2, 3, 4]  # the input is left as it was


def test_cutmix_pastes_a_box_whose_area_is_the_partners_share() -> None:
    torch.manual_seed(3)
    batch = _labelled_images()
    mixed = mix_batch(batch, "cutmix", alpha=1.0)
    assert mixed.mix is not None
    differs = batch.y != mixed.mix.partner
    own = (mixed.x[:, 0] == batch.y.view(-1, 1, 1)).float().mean((1, 2))
    assert differs.any() and 0 < mixed.mix.share < 1
    assert torch.allclose(own[differs], torch.full_like(own[differs], mixed.mix.share))
    assert ((mixed.x[:, 0] == batch.y.view(-1, 1, 1)) | (mixed.x[:, 0] == mixed.mix.partner.view(-1, 1, 1))).all()


def test_the_same_seed_mixes_the_same_way() -> None:
    batch = _labelled_images()
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(mix_batch(batch, "cutmix", alpha=1.0))
    first, second = (run.mix for run in runs)
    assert first is not None and second is not None
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(first.partner, second.partner)
    assert first.share == second.share
    assert mix_batch(batch, "none", alpha=1.0) is batch


def test_the_loss_of_a_mixed_batch_weighs_both_labels_by_their_share() -> None:
    logits = torch.randn(6, 4)
    labels, partner = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 3, 1, 0, 2, 2])
    outputs = Outputs({"label": logits}, torch.zeros(6, 2))
    objective = CrossEntropy(label_smoothing=0.1)
    batch = Batch(torch.zeros(6, 3, 4, 4), labels, mix=Mixed(partner, 0.7))
    loss, _ = objective(outputs, batch, 0.0)
    expected = 0.7 * F.cross_entropy(logits, labels, label_smoothing=0.1) + 0.3 * F.cross_entropy(
        logits, partner, label_smoothing=0.1
    )
    assert torch.allclose(loss, expected)
    unmixed, _ = objective(outputs, Batch(batch.x, labels), 0.0)
    assert not torch.allclose(loss, unmixed)


def test_cutmix_refuses_pooled_features_which_have_no_box_to_cut() -> None:
    features = Batch(torch.randn(8, 20), torch.arange(8) % 2)
    with pytest.raises(ConfigError, match="use mixup"):
        mix_batch(features, "cutmix", alpha=1.0)
    mixed = mix_batch(features, "mixup", alpha=1.0)  # manifold mixup of the cached features
    assert mixed.mix is not None and mixed.x.shape == features.x.shape


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mix": "blend"}, "mix must be one of none, mixup, cutmix"),
        ({"mix": "mixup", "mix_alpha": 0.0}, "mix_alpha must be positive"),
        ({"mix": "cutmix", "tasks": "age,gender"}, "mix blends one task's labels"),
        ({"mix": "mixup", "target": "elsewhere"}, "mix blends one task's labels"),
    ],
)
def test_mixing_settings_that_cannot_work_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FitConfig(**settings)
