"""LogME and H-score on synthetic features whose information about the labels is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from transferlab.transferability import h_score, logme

SCORES = [logme, h_score]


def _features(n: int, d: int, separation: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise plus a class-dependent mean: `separation` scales how far apart the 4 class means lie."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    means = rng.normal(size=(4, d))
    return rng.normal(size=(n, d)) + separation * means[labels], labels


def _direct_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME from its definition, with no SVD and no fixed point: y ~ N(0, I / beta + F F^T / alpha) for each
    one-vs-rest target, its log density maximised over (alpha, beta) by a general-purpose optimiser."""
    n = len(features)
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)

        def negative(log_precisions: np.ndarray, y: np.ndarray = y) -> float:
            alpha, beta = np.exp(log_precisions)
            covariance = np.eye(n) / beta + features @ features.T / alpha
            return -multivariate_normal(np.zeros(n), covariance).logpdf(y)

        best = minimize(negative, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
        evidences.append(-best.fun)
    return float(np.mean(evidences)) / n


def test_logme_is_the_maximised_evidence_of_its_definition() -> None:
    features, labels = _features(60, 5, separation=1.0)
    assert logme(features, labels) == pytest.approx(_direct_logme(features, labels), abs=1e-6)


@pytest.mark.parametrize("score", SCORES)
def test_features_that_carry_the_labels_score_higher_than_random_ones(score) -> None:
    informative, labels = _features(200, 16, separation=1.5)
    random = np.random.default_rng(1).normal(size=informative.shape)
    assert score(informative, labels) > score(random, labels)


@pytest.mark.parametrize("score", SCORES)
def test_permuting_the_samples_leaves_the_score_unchanged(score) -> None:
    features, labels = _features(120, 10, separation=1.0)
    order = np.random.default_rng(2).permutation(len(labels))
    assert score(features[order], labels[order]) == pytest.approx(score(features, labels), rel=1e-9)


def test_logme_rises_with_the_strength_of_the_signal() -> None:
    values = [logme(*_features(200, 16, separation)) for separation in (0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and len(set(values)) == len(values)


@pytest.mark.parametrize("score", SCORES)
def test_fewer_samples_than_dimensions_give_finite_scores_that_still_rank(score) -> None:
    informative, labels = _features(30, 100, separation=1.5)
    random = np.random.default_rng(3).normal(size=informative.shape)
    assert np.isfinite(score(informative, labels)) and np.isfinite(score(random, labels))
    assert score(informative, labels) > score(random, labels)


def test_h_score_runs_from_zero_to_classes_minus_one() -> None:
    labels = np.arange(400) % 4
    noise = np.random.default_rng(4).normal(size=(400, 8))
    one_hot = np.eye(4)[labels] @ np.random.default_rng(5).normal(size=(4, 8))  # no within-class variance
    assert h_score(noise, labels) == pytest.approx(0.0, abs=0.1)
    assert h_score(one_hot, labels) == pytest.approx(3.0, rel=1e-2)


@pytest.mark.parametrize("score", SCORES)
def test_features_and_labels_of_different_lengths_are_refused(score) -> None:
    with pytest.raises(ValueError, match="expected features"):
        score(np.zeros((5, 3)), np.zeros(4))
