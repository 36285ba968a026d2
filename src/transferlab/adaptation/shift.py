"""How far a target domain lies from the source, measured on pooled features, and feature-level ways to
bridge it: weigh the source images, or keep only the most target-like ones.

Everything rests on one probabilistic classifier that tells target images from source images:
- its held-out balanced accuracy gives the proxy A-distance, 2 (1 - 2 err) (Ben-David et al. 2007; Ganin et
  al. 2016): 0 when the domains cannot be told apart, 2 when they always can;
- its out-of-fold probabilities give each source image's density ratio p_t(x) / p_s(x), the importance weight
  that makes the source sample look like a target sample (Bickel et al. 2007; You et al. 2019, DEV).

All of it works on plain numpy feature arrays [N, D], such as `pooled_features` of a pretrained backbone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from transferlab.backbones import Backbone
from transferlab.data.transforms import Normalizer
from transferlab.inference import INFERENCE_BATCH, evaluating, without_batchnorm

# Inverse penalty strengths C tried for the domain classifier; the one with the lowest out-of-fold log loss is
# kept. One fixed C does not fit all: on 2,000 synthetic 1,280-wide features, C = 1 overfitted (held-out log
# loss 3.4 on identical domains, against ln 2 = 0.69 for a coin toss) where 1e-3 to 1e-1 did best, while
# low-dimensional features want almost no penalty. Choosing on the same folds flatters the winner a little;
# among five candidates that is small against the folds' own noise. All 25 fits took 0.8 to 2 s on one core for
# 2,000 x 1,280 features, 10 to 11 s for 12,000 x 1,280.
REGULARIZATIONS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Iteration cap of each fit, far above what the fits above needed (under 100).
MAX_ITER = 1000
# Probabilities are kept this far from 0 and 1, so that a classifier certain of an image gives a large but
# finite density ratio (at most 1e6), which `importance_weights` then caps.
PROB_GUARD = 1e-6
# Proxy A-distance bands for `describe_shift`. Provisional, to be calibrated on a benchmark: 0.5 is a
# classifier right 62.5% of the time (balanced), 1.5 one right 87.5% of the time.
SMALL_SHIFT_BELOW = 0.5
STRONG_SHIFT_FROM = 1.5


# eq=False: the fields are arrays, whose `==` is elementwise, so a generated __eq__ or __hash__ would fail.
@dataclass(frozen=True, eq=False)
class DomainClassifier:
    """A cross-fitted classifier of target (1) against source (0): every probability comes from a model that
    never saw that image."""

    source_prob: np.ndarray  # [Ns] out-of-fold p(target | x) of each source image
    target_prob: np.ndarray  # [Nt] out-of-fold p(target | x) of each target image
    accuracy: float  # held-out balanced accuracy; 0.5 is chance
    proxy_a_distance: float  # 2 (1 - 2 err), err the held-out balanced error clipped to [0, 0.5]
    regularization: float  # the C chosen from REGULARIZATIONS
    seconds: float


def classify_domains(
    source: np.ndarray,
    target: np.ndarray,
    seed: int = 0,
    folds: int = 5,
    regularizations: Sequence[float] = REGULARIZATIONS,
) -> DomainClassifier:
    """Tell `target` features [Nt, D] from `source` features [Ns, D] with a logistic regression on standardised
    features, cross-fitted over `folds` stratified folds (shuffled with `seed`), its C the best of
    `regularizations` by held-out log loss.

    Classes are weighted to count equally, so unequal domain sizes do not bias the classifier: its odds
    p / (1 - p) then estimate p_t(x) / p_s(x) directly, with no prior correction (see `density_ratio`).
    """
    started = time.perf_counter()
    _check_domains(source, target, folds)
    x = np.concatenate([source, target]).astype(np.float64)
    y = np.concatenate([np.zeros(len(source), dtype=np.int64), np.ones(len(target), dtype=np.int64)])
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    candidates = _out_of_fold(x, y, splits, regularizations)
    balance = compute_sample_weight("balanced", y)
    best = int(np.argmin([log_loss(y, prob, sample_weight=balance, labels=[0, 1]) for prob in candidates]))
    prob = candidates[best]
    accuracy = float(balanced_accuracy_score(y, prob >= 0.5))
    error = min(max(1.0 - accuracy, 0.0), 0.5)  # worse than chance is chance: the domains are not told apart
    return DomainClassifier(
        source_prob=prob[: len(source)],
        target_prob=prob[len(source) :],
        accuracy=accuracy,
        proxy_a_distance=2.0 * (1.0 - 2.0 * error),
        regularization=regularizations[best],
        seconds=time.perf_counter() - started,
    )


def _check_domains(source: np.ndarray, target: np.ndarray, folds: int) -> None:
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"source and target must be [N, D] with the same D, got {source.shape} and {target.shape}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if min(len(source), len(target)) < folds:
        raise ValueError(f"{folds} folds need at least {folds} images per domain, got {len(source)} and {len(target)}")


def _out_of_fold(
    x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], regularizations: Sequence[float]
) -> np.ndarray:
    """[len(regularizations), N]: each image's p(target | x) under each C, from the fold that held it out."""
    prob = np.empty((len(regularizations), len(y)))
    for fit, held in splits:
        scaler = StandardScaler().fit(x[fit])  # on the fitting rows only: the held-out ones stay unseen
        train, test = scaler.transform(x[fit]), scaler.transform(x[held])
        for row, c in enumerate(regularizations):
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER).fit(train, y[fit])
            prob[row, held] = model.predict_proba(test)[:, 1]
    return prob


def density_ratio(result: DomainClassifier) -> np.ndarray:
    """[Ns] estimated p_t(x) / p_s(x) of each source image: the classifier's odds p / (1 - p).

    Bickel et al. multiply the odds by Ns / Nt to undo the prior of an unweighted classifier; this one is
    fitted with balanced class weights, whose prior odds are already 1, so that factor would count the domain
    sizes twice.
    """
    prob = np.clip(result.source_prob, PROB_GUARD, 1.0 - PROB_GUARD)
    return prob / (1.0 - prob)


def importance_weights(ratio: np.ndarray, clip: float = 10.0) -> np.ndarray:
    """Density ratios capped at `clip` times their median (see `capped_ratio`), then scaled to mean 1."""
    capped = capped_ratio(ratio, clip)
    return capped / capped.mean()


def capped_ratio(ratio: np.ndarray, clip: float = 10.0) -> np.ndarray:
    """Density ratios capped at `clip` times their median.

    The cap keeps a few images the classifier is sure about from carrying most of the weight (which would
    collapse the effective sample size); the median is the reference because those very images cannot move it.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    if ratio.ndim != 1 or len(ratio) == 0 or not np.isfinite(ratio).all() or (ratio < 0).any():
        raise ValueError("ratio must be a non-empty 1-d array of finite, non-negative numbers")
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    median = float(np.median(ratio))
    if median == 0:
        raise ValueError("half or more of the ratios are 0: there is no typical weight to scale by")
    return np.minimum(ratio, clip * median)


def dev_risk(losses: np.ndarray, ratio: np.ndarray, clip: float = 10.0) -> tuple[float, float]:
    """(estimate, standard error) of the target's mean loss from the source validation images' `losses` and
    density ratios p_t(x) / p_s(x): Deep Embedded Validation (You et al., ICML 2019).

    The importance-weighted mean of w·loss is unbiased but noisy; since the true weights average 1 over the
    source, w itself is a control variate: DEV = mean(w·loss) + η (mean(w) - 1), with η = -Cov(w·loss, w) /
    Var(w), the η that minimises the variance. The ratios are capped as `capped_ratio` does, not rescaled:
    rescaling to mean 1 would leave the control variate nothing to correct.
    """
    losses = np.asarray(losses, dtype=np.float64)
    weights = capped_ratio(ratio, clip)
    if losses.shape != weights.shape:
        raise ValueError(f"losses and ratios must be aligned, got {losses.shape} and {weights.shape}")
    weighted = weights * losses
    variance = float(weights.var(ddof=1)) if len(weights) > 1 else 0.0
    eta = -float(np.cov(weighted, weights)[0, 1]) / variance if variance > 0 else 0.0
    terms = weighted + eta * (weights - 1.0)
    error = float(terms.std(ddof=1)) / len(terms) ** 0.5 if len(terms) > 1 else 0.0
    return float(terms.mean()), error


def effective_sample_size(weights: np.ndarray) -> float:
    """(Σw)² / Σw² (Kish): how many equally weighted images the weighted sample is worth."""
    weights = np.asarray(weights, dtype=np.float64)
    squares = float((weights**2).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def select(ratio_or_scores: np.ndarray, labels: np.ndarray, keep: int | float, min_per_class: int = 1) -> np.ndarray:
    """Sorted indices of the `keep` most target-like source images (highest score first), where `keep` is a
    count (int) or a fraction of the source (float in (0, 1], rounded, at least 1).

    No class vanishes: each keeps its min(min_per_class, count) most target-like images first, and the rest is
    filled by global rank. When those floors alone exceed `keep`, all of them are kept (more than `keep`).
    """
    scores = np.asarray(ratio_or_scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-d and aligned, got {scores.shape} and {labels.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be at least 0, got {min_per_class}")
    count = keep_count(keep, len(scores))
    order = np.argsort(-scores, kind="stable")  # most target-like first; ties keep their source order
    chosen = np.zeros(len(scores), dtype=bool)
    for label in np.unique(labels):
        chosen[order[labels[order] == label][:min_per_class]] = True
    chosen[order[~chosen[order]][: max(0, count - int(chosen.sum()))]] = True
    return np.flatnonzero(chosen)


def keep_count(keep: int | float, total: int) -> int:
    if isinstance(keep, float | np.floating):
        if not 0 < keep <= 1:
            raise ValueError(f"keep as a fraction must be in (0, 1], got {keep}")
        return max(1, round(float(keep) * total))
    if keep <= 0:
        raise ValueError(f"keep must be positive, got {keep}")
    if keep > total:
        raise ValueError(f"keep={keep} is more than the {total} source images")
    return int(keep)


@torch.no_grad()
def pooled_features(
    backbone: Backbone, images: torch.Tensor, device: str = "cpu", batch_size: int = INFERENCE_BATCH
) -> np.ndarray:
    """The backbone's final pooled features [N, feature_dim] of uint8 `images` [N, 3, S, S].

    One pass through all stages per batch, pooling only the last (`probe.stage_features` pools every stage),
    in eval mode (BatchNorm uses its running statistics; the caller's mode is restored). The backbone must
    already be on `device`.
    """
    normalizer = Normalizer(backbone.preprocessing)
    chunks = []
    fast: Backbone | None = None
    with evaluating(backbone):
        for start in range(0, len(images), batch_size):
            x = normalizer(images[start : start + batch_size], device=device)
            fast = fast or without_batchnorm(backbone, "forward_features", x[:1])
            chunks.append(fast.forward_features(x).float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.empty((0, backbone.feature_dim), dtype=np.float32)


def describe_shift(result: DomainClassifier) -> str:
    """The domain classifier's verdict in plain words, with its numbers."""
    distance = result.proxy_a_distance
    if distance < SMALL_SHIFT_BELOW:
        verdict = "the domains differ little"
    elif distance < STRONG_SHIFT_FROM:
        verdict = "the domains differ moderately"
    else:
        verdict = "the domains differ strongly"
    # Below chance happens when the domains share images: each held-out image's twin, labelled the other
    # domain, sits in the training folds. It is "cannot tell them apart", not a classifier that knows better.
    told = "no better than chance" if result.accuracy <= 0.5 else f"{100 * result.accuracy:.1f}% of the time"
    return (
        f"a linear classifier tells target from source images apart {told} on these features (balanced, "
        f"held out; 50% is chance; proxy A-distance {distance:.2f} of 2): {verdict}"
    )
