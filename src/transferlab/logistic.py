"""Linear probes fitted many at once: multinomial logistic regressions solved as one batched problem.

The advisor fits 16 to 80 probes per decision (every stage, pretrained and random, over cross-validation folds
on tiny sets). Fitted one by one with scikit-learn, they cost 1.2 to 2.8 s on the tiny situations cells, most
of it per-fit overhead and per-iteration Python calls, against 4 to 17 s for a whole fine-tune. Here probes
of similar width are padded to one shape and solved together by L-BFGS, each step a few batched tensor
operations: 0.3 to 0.6 s for the same probes.

Each probe is scikit-learn's default `LogisticRegression`: L2 penalty with C = 1 on the weights, free
intercepts, on standardised features. The objective is a sum of independent per-probe terms, so its minimum
is every probe's own minimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Iterations of the joint L-BFGS solve. Probes that stop short still rank stages fairly (all stop alike).
PROBE_MAX_ITER = 200
# Stop once no weight's gradient exceeds this (each probe's loss is a mean over its rows, as in scikit-learn).
GRADIENT_TOLERANCE = 1e-4

# Below this width a step costs its Python overhead, whatever the width: such problems are all solved at once.
SMALLEST_GROUP_WIDTH = 128

Problem = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, val_x, val_y


def probe_accuracies(problems: Sequence[Problem]) -> list[float]:
    """For each (train_x, train_y, val_x, val_y), the val accuracy of a logistic regression fitted on train."""
    # in float64, as the thresholds they are compared with: 0.78 - 0.68 is 0.0999999 in float32
    return [float(correct.mean(dtype=np.float64)) for correct in probe_hits(problems)]


def probe_hits(problems: Sequence[Problem]) -> list[np.ndarray]:
    """For each (train_x, train_y, val_x, val_y), whether the logistic regression fitted on train classifies
    each val row correctly ([len(val_y)] bool): accuracies, and the paired differences between two probes on
    the same rows, with their standard errors.

    Problems of similar width (the same power of two, all below SMALLEST_GROUP_WIDTH together) are solved
    together: padding a 16-wide stage to a 1,280-wide one would waste most of each step, and a batch runs
    until its slowest probe converges.
    """
    spans = [training_span(*_standardised(train_x, val_x)) for train_x, _, val_x, _ in problems]
    classes = 1 + max(int(train_y.max()) for _, train_y, _, _ in problems)
    groups: dict[int, list[int]] = {}
    for index, (train, _) in enumerate(spans):
        groups.setdefault(int(np.ceil(np.log2(max(SMALLEST_GROUP_WIDTH, train.shape[1])))), []).append(index)
    hits: list[np.ndarray] = [np.empty(0, dtype=bool)] * len(problems)
    for members in groups.values():
        solved = _solve([spans[i] for i in members], [problems[i] for i in members], classes)
        for index, each in zip(members, solved, strict=True):
            hits[index] = each
    return hits


def _solve(spans: list[tuple[np.ndarray, np.ndarray]], problems: list[Problem], classes: int) -> list[np.ndarray]:
    train_x, train_mask = _stack([train for train, _ in spans])
    val_x, _ = _stack([val for _, val in spans])
    train_y = _stack_labels([train_y for _, train_y, _, _ in problems], train_x.shape[1])
    val_y = _stack_labels([val_y for _, _, _, val_y in problems], val_x.shape[1])
    weights = _fit(train_x, train_y, train_mask, classes)
    with torch.no_grad():
        correct = ((val_x @ weights).argmax(-1) == val_y).numpy()
    return [row[: len(val_y)] for row, (_, _, _, val_y) in zip(correct, problems, strict=True)]


def _standardised(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled by the train set's column means and deviations (constant columns left unscaled)."""
    train, val = train.astype(np.float64), val.astype(np.float64)
    mean, scale = train.mean(0), train.std(0)
    scale[scale == 0] = 1.0
    return (train - mean) / scale, (val - mean) / scale


def training_span(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in coordinates of the subspace the training rows span, when that is smaller than the features.

    The weights of an L2-penalised linear model lie in that span (the representer theorem), so the probe
    predicts exactly as it would on the full features, while the solver works in n instead of d dimensions:
    10 images per class against 1,280 features. The span comes from the n x n Gram matrix, cheaper than an SVD
    of the n x d rows.
    """
    if len(train) >= train.shape[1]:
        return train, val
    eigenvalues, vectors = np.linalg.eigh(train @ train.T)
    keep = eigenvalues > eigenvalues.max() * 1e-12  # squared singular values: 1e-6 relative to the largest
    basis = (vectors[:, keep] / np.sqrt(eigenvalues[keep])).T @ train  # orthonormal rows spanning the train rows
    return train @ basis.T, val @ basis.T


def _stack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[P, rows, dim + 1] zero-padded features with a trailing 1 (the intercept) on real rows, and their mask."""
    rows, dim = max(len(a) for a in arrays), max(a.shape[1] for a in arrays)
    stacked = torch.zeros(len(arrays), rows, dim + 1, dtype=torch.float64)
    mask = torch.zeros(len(arrays), rows, dtype=torch.bool)
    for index, array in enumerate(arrays):
        stacked[index, : len(array), : array.shape[1]] = torch.from_numpy(array)
        stacked[index, : len(array), -1] = 1.0
        mask[index, : len(array)] = True
    return stacked, mask


def _stack_labels(labels: list[np.ndarray], rows: int) -> torch.Tensor:
    stacked = torch.zeros(len(labels), rows, dtype=torch.long)
    for index, values in enumerate(labels):
        stacked[index, : len(values)] = torch.from_numpy(np.asarray(values, dtype=np.int64))
    return stacked


def _fit(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, classes: int) -> torch.Tensor:
    """Weights [P, dim + 1, classes] minimising, per probe, mean cross-entropy + ||w||^2 / (2 n) (C = 1)."""
    inverse_rows = 1 / mask.sum(1).double().view(-1, 1, 1)  # [P, 1, 1]
    row_weight = mask.double().unsqueeze(2) * inverse_rows  # each row's share of its probe's mean; 0 on padding
    penalised = torch.ones(x.shape[2], 1, dtype=torch.float64)
    penalised[-1] = 0.0  # the intercept is free
    targets = torch.nn.functional.one_hot(y, classes).double()
    weights = torch.zeros(x.shape[0], x.shape[2], classes, dtype=torch.float64)
    weights.grad = torch.zeros_like(weights)
    solver = torch.optim.LBFGS(
        [weights],
        max_iter=PROBE_MAX_ITER,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        # The gradient in closed form, X^T (softmax - onehot) / n + w / n: a step is four batched tensor
        # operations, with none of autograd's bookkeeping (half of each step's time on these small problems).
        log_probs = torch.log_softmax(x @ weights, dim=2)
        data_loss = -(targets * log_probs * row_weight).sum()
        penalty_grad = weights * penalised * inverse_rows
        weights.grad = x.transpose(1, 2) @ ((log_probs.exp() - targets) * row_weight) + penalty_grad
        return data_loss + 0.5 * (penalty_grad * weights).sum()

    solver.step(objective)
    return weights
