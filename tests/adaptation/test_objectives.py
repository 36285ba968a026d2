"""Domain adaptation's loss modules and batches, on real computation: the gradient reversal layer, CORAL, a
DANN that learns to hide a nuisance feature, source weighting, and side-by-side batches that resume."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from transferlab.adaptation.objectives import (
    Adaptation,
    Coral,
    DomainAdversarial,
    Pair,
    coral,
    dann_coefficient,
    reverse_gradient,
)
from transferlab.backbones import Preprocessing
from transferlab.data.transforms import Normalizer
from transferlab.model import Outputs
from transferlab.train.batches import Batch, ImageBatches, PairedBatches


def test_gradient_reversal_is_the_identity_forward_and_flips_and_scales_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(5, 3))


def test_the_dann_coefficient_ramps_from_zero_to_one_with_progress() -> None:
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values[0] == 0.0 and values[-1] > 0.999
    assert all(a < b for a, b in itertools.pairwise(values))


def test_coral_is_zero_for_identical_features_and_grows_with_the_covariance_gap() -> None:
    torch.manual_seed(0)
    features = torch.randn(64, 8)
    assert coral(features, features).item() == 0.0
    near = coral(features, features * 1.1).item()
    far = coral(features, features * 2.0).item()
    assert 0 < near < far


def _pair(source_features: torch.Tensor, target_features: torch.Tensor) -> Pair:
    return Pair(source_features, target_features, torch.ones(len(source_features)))


def _domain(count: int, nuisance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two input dimensions: the class signal (±1), and a nuisance centred on `nuisance`."""
    labels = torch.randint(0, 2, (count,))
    signal = (labels * 2 - 1).float() + 0.5 * torch.randn(count)
    return torch.stack([signal, nuisance + 0.5 * torch.randn(count)], 1), labels


def _discriminator_accuracy(reverse: bool, steps: int = 400) -> float:
    """The discriminator's mean training accuracy over the last quarter of a toy run in which the domains
    differ only in the nuisance (0 on the source, 2 on the target); `reverse`: DANN's ramped reversal, else a
    coefficient of 0 (the same discriminator, but the features never try to fool it)."""
    torch.manual_seed(0)
    features, head = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4)), nn.Linear(4, 2)
    objective = Adaptation(DomainAdversarial(4, hidden=16, dropout=0.1))
    optimizer = torch.optim.Adam([*features.parameters(), *head.parameters(), *objective.parameters()], lr=0.005)
    accuracies = []
    for step in range(steps):
        (source, labels), (target, _) = _domain(64, 0.0), _domain(64, 2.0)
        f = features(torch.cat([source, target]))
        batch = Batch(torch.zeros(128, 1), torch.cat([labels, torch.full((64,), -1)]), n_source=64)
        loss, parts = objective(Outputs({"label": head(f)}, f), batch, progress=step / steps if reverse else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracies.append(parts["domain/accuracy"].item())
    return sum(accuracies[-steps // 4 :]) / (steps // 4)


def test_the_dann_discriminator_loses_track_of_a_nuisance_the_domains_differ_in() -> None:
    assert _discriminator_accuracy(reverse=False) > 0.9  # the nuisance gives the domains away
    assert _discriminator_accuracy(reverse=True) < 0.6  # the reversed gradient has taught the features to hide it


def test_dann_logs_its_discriminator_accuracy_and_the_a_distance_it_implies() -> None:
    torch.manual_seed(0)
    term = DomainAdversarial(4, hidden=8)
    _, parts = term(_pair(torch.randn(16, 4), torch.randn(16, 4) + 5), 0.5)
    assert set(parts) == {"transfer/dann", "domain/accuracy", "domain/a_distance"}
    assert parts["domain/a_distance"].item() == 2 * (2 * parts["domain/accuracy"].item() - 1)


def test_image_weights_of_zero_take_those_images_out_of_the_source_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, -1, -1])  # four source rows, two target rows
    weights = torch.tensor([1.0, 0.0, 1.0, 0.0, 9.0, 9.0])  # by training-split index
    objective = Adaptation(None, image_weights=weights)
    batch = Batch(torch.zeros(6, 1), labels, index=torch.arange(4), n_source=4)
    loss, parts = objective(Outputs({"label": logits}, torch.zeros(6, 2)), batch, 0.0)
    expected = nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(loss, expected)
    assert torch.allclose(parts["loss/source"], expected)


def test_class_weighting_fades_the_classes_the_target_never_predicts() -> None:
    objective = Adaptation(Coral(), class_weighting=True, num_classes=3)
    target_logits = torch.tensor([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]]).repeat(4, 1)  # classes 0 and 1 only
    logits = torch.cat([torch.zeros(8, 3), target_logits])
    batch = Batch(torch.zeros(16, 1), torch.cat([torch.arange(8) % 3, torch.full((8,), -1)]), n_source=8)
    for _ in range(300):
        _, parts = objective(Outputs({"label": logits}, torch.randn(16, 4)), batch, 0.5)
    assert objective.class_mass is not None
    weights = objective.class_mass / objective.class_mass.max()
    assert weights[2] < 0.1 < 0.9 < weights[:2].min()
    assert parts["weight/smallest_class"].item() == weights.min().item()


def _image_batches(count: int, value: int, batch_size: int) -> ImageBatches:
    images = torch.full((count, 3, 4, 4), value, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)  # each image's own id in a pixel
    normalizer = Normalizer(Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), input_size=4), channels_last=False)
    return ImageBatches(images, torch.arange(count) % 2, normalizer, batch_size, shuffle=True)


def _ids(batch: Batch) -> list[int]:
    return (batch.x[:, 0, 0, 0] * 255).round().int().tolist()


def test_paired_batches_cycle_the_target_and_resume_mid_epoch_on_the_same_batches() -> None:
    paired = PairedBatches(_image_batches(40, 10, 8), _image_batches(12, 200, 4))
    assert len(paired) == 5
    epochs = [list(paired.batches(seed=3, epoch=epoch)) for epoch in range(3)]
    first = epochs[0][0]
    assert first.n_source == 8 and len(first.x) == 12
    assert first.y[8:].eq(-1).all() and first.y[:8].ge(0).all()
    target_ids = [_ids(b)[8:] for epoch in epochs for b in epoch]
    # 15 steps of 4 target images over a 12-image target: five target epochs, each a permutation of all 12
    for k in range(5):
        assert sorted(itertools.chain(*target_ids[3 * k : 3 * k + 3])) == list(range(12))
    resumed = list(paired.batches(seed=3, epoch=2, first_step=3))
    assert [_ids(b) for b in resumed] == [_ids(b) for b in epochs[2][3:]]
