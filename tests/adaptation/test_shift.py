"""Domain shift on features: the domain classifier's distance on known cases, density ratios against the true
ratio of two Gaussians, weights, selection, and pooled features against the per-stage helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tests.conftest import TINY
from transferlab.adaptation.shift import (
    classify_domains,
    density_ratio,
    describe_shift,
    dev_risk,
    effective_sample_size,
    importance_weights,
    pooled_features,
    select,
)
from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.probe import stage_features


def test_identical_domains_are_not_told_apart() -> None:
    rng = np.random.default_rng(0)
    result = classify_domains(rng.normal(size=(500, 5)), rng.normal(size=(400, 5)))
    assert result.proxy_a_distance < 0.3
    assert abs(result.accuracy - 0.5) < 0.08
    assert result.source_prob.shape == (500,) and result.target_prob.shape == (400,)
    assert "differ little" in describe_shift(result)


def test_separated_domains_are_told_apart() -> None:
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(300, 5)), rng.normal(size=(200, 5))
    target[:, 0] += 4
    result = classify_domains(source, target)
    assert result.proxy_a_distance > 1.5
    assert result.target_prob.mean() > 0.9 > 0.1 > result.source_prob.mean()
    assert "differ strongly" in describe_shift(result)
    assert f"{100 * result.accuracy:.1f}%" in describe_shift(result)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_ratio_recovers_the_true_ratio(seed: int) -> None:
    # Source N(0, I), target shifted by 0.5 along the first of 3 axes: p_t/p_s = exp(0.5 x0 - 0.125). Unequal
    # domain sizes check the ratio's scale too (a stray Ns/Nt factor would double it). Over 30 seeds the
    # Spearman correlation was at least 0.93 and the mean relative errors at most 0.14.
    rng = np.random.default_rng(seed)
    source, target = rng.normal(size=(1000, 3)), rng.normal(size=(500, 3))
    target[:, 0] += 0.5
    ratio = density_ratio(classify_domains(source, target, seed=seed))
    truth = np.exp(0.5 * source[:, 0] - 0.125)
    assert spearmanr(ratio, truth).statistic > 0.9
    assert np.mean(np.abs(ratio - truth) / truth) < 0.2
    weights, true_weights = importance_weights(ratio), truth / truth.mean()
    assert np.mean(np.abs(weights - true_weights) / true_weights) < 0.2


def test_density_ratio_stays_finite_when_the_classifier_is_certain() -> None:
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(100, 2)), rng.normal(size=(100, 2))
    source[:50, 0] += 1e4  # half the source far beyond the target: p(target | x) rounds to 0 or 1
    ratio = density_ratio(classify_domains(source, target))
    assert np.isfinite(ratio).all() and (ratio > 0).all()


def test_importance_weights_cap_outliers_and_average_one() -> None:
    weights = importance_weights(np.array([1.0] * 9 + [1000.0]), clip=10.0)
    assert weights.mean() == pytest.approx(1.0)
    assert weights.max() / np.median(weights) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        importance_weights(np.array([1.0, -1.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dev_estimates_the_target_loss_from_source_losses(seed: int) -> None:
    # The Gaussians above, with the loss (x0 - 1)^2: its mean is 2 over the source and 1.25 over the target.
    # Over 5 seeds DEV read 1.12-1.33 with the estimated ratio, 1.15-1.28 with the true one.
    rng = np.random.default_rng(seed)
    source, target = rng.normal(size=(1000, 3)), rng.normal(size=(500, 3))
    target[:, 0] += 0.5
    losses = (source[:, 0] - 1) ** 2
    estimate, error = dev_risk(losses, density_ratio(classify_domains(source, target, seed=seed)))
    assert abs(losses.mean() - 2.0) < 0.3  # the source's own mean is far off the target's
    assert abs(estimate - 1.25) < 0.15 and 0 < error < 0.1


def test_dev_uses_the_weights_as_a_control_variate() -> None:
    # A constant loss: the weighted mean alone reads c * mean(w), off by the weights' sampling noise; the
    # control variate removes that noise exactly.
    weights = np.random.default_rng(0).lognormal(size=200)
    estimate, error = dev_risk(np.full(200, 0.7), weights, clip=100.0)
    assert abs(0.7 * weights.mean() - 0.7) > 0.1
    assert estimate == pytest.approx(0.7) and error == pytest.approx(0.0, abs=1e-12)
    assert dev_risk(np.array([1.0, 3.0]), np.ones(2)) == (2.0, 1.0)  # equal weights: the plain mean


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.full(50, 0.3)) == pytest.approx(50)
    assert effective_sample_size(np.array([0.0, 0.0, 2.5, 0.0])) == pytest.approx(1)


def test_select_keeps_the_best_of_each_class_then_the_global_best() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert select(scores, labels, keep=2).tolist() == [0, 4]
    assert select(scores, labels, keep=0.5).tolist() == [0, 1, 4]
    assert select(scores, labels, keep=1.0).tolist() == list(range(6))
    assert select(scores, labels, keep=2, min_per_class=0).tolist() == [0, 1]
    # floors above `keep`: every class still keeps its best
    assert select(scores, np.array([0, 0, 1, 1, 2, 2]), keep=1).tolist() == [0, 2, 4]


@pytest.mark.parametrize("keep", [0, -3, 0.0, 1.5, 7])
def test_select_refuses_bad_keep(keep: float) -> None:
    with pytest.raises(ValueError, match="keep"):
        select(np.arange(6.0), np.zeros(6, dtype=int), keep=keep)


def test_select_keeps_the_target_like_half_of_a_mixed_source() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(200, 4))
    near, far = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    far[:, 0] += 3
    source = np.concatenate([near, far])
    # classes 0 and 1 in both halves; class 2 only among the far images
    labels = np.concatenate([np.arange(200) % 2, np.where(np.arange(200) < 20, 2, np.arange(200) % 2)])
    kept = select(density_ratio(classify_domains(source, target)), labels, keep=0.5, min_per_class=3)
    assert len(kept) == 200
    assert np.mean(kept < 200) >= 0.9
    assert np.sum(labels[kept] == 2) == 3


def test_pooled_features_match_the_last_stage_of_stage_features() -> None:
    torch.manual_seed(0)
    backbone = create_backbone(TINY, pretrained=False)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    features = pooled_features(backbone, images, batch_size=2)
    assert backbone.training  # the caller's mode is restored
    expected = stage_features(backbone, images, Normalizer(backbone.preprocessing))[-1]
    assert features.shape == (5, backbone.feature_dim)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
