"""Batched linear probes: each one the logistic regression scikit-learn would fit, all solved at once."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferlab.logistic import probe_accuracies


def _problem(rng: np.random.Generator, width: int, rows: int, classes: int = 4, noise: float = 3.0):
    centres = rng.normal(size=(classes, width))
    train_y, val_y = rng.integers(0, classes, rows), rng.integers(0, classes, 200)
    train_x = centres[train_y] + noise * rng.normal(size=(rows, width))
    val_x = centres[val_y] + noise * rng.normal(size=(200, width))
    return train_x.astype(np.float32), train_y, val_x.astype(np.float32), val_y


def _sklearn_accuracy(train_x, train_y, val_x, val_y) -> float:
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=10_000, tol=1e-10).fit(scaler.transform(train_x), train_y)
    return float(model.score(scaler.transform(val_x), val_y))


def test_each_batched_probe_scores_as_scikit_learns_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    # widths from 8 to 300 (two width groups), fewer rows than features in some (solved in the training span)
    problems = [_problem(rng, width, rows) for width, rows in [(8, 120), (30, 60), (300, 80), (200, 400), (16, 40)]]
    batched = probe_accuracies(problems)
    expected = [_sklearn_accuracy(*problem) for problem in problems]
    # the same optimum up to the solvers' tolerances: at most one of 200 validation predictions differs
    assert np.allclose(batched, expected, atol=1 / 200 + 1e-9)
    assert len(set(expected)) > 1  # the problems differ, so a mix-up between them would show


def test_a_probe_scores_the_same_alone_as_in_a_batch() -> None:
    rng = np.random.default_rng(1)
    problems = [_problem(rng, 24, 100), _problem(rng, 40, 100, noise=1.0), _problem(rng, 20, 50, classes=3)]
    together = probe_accuracies(problems)
    alone = [probe_accuracies([problem])[0] for problem in problems]
    assert np.allclose(together, alone, atol=1 / 200 + 1e-9)
    assert together[1] > together[0]  # less noise, better probe: the scores are not all alike
