"""How well fixed features suit a labelled target, measured without fine-tuning: LogME and H-score.

Both read only a feature matrix [N, D] and its labels, so they can rank backbones (or the stages of one) in
seconds where fine-tuning each would take hours. Higher is better for both; neither is comparable across
data sets, only across features of the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# LogME's fixed-point iteration. The reference stops after 11 steps or a 1e-3 relative change of alpha/beta:
# enough when N >> D, where it converges in 2-3 steps. With fewer samples than dimensions it creeps (N=20,
# D=40: alpha/beta at 52 after 11 steps, its fixed point 80). A step costs O(min(N, D)), so run it out.
_LOGME_MAX_STEPS = 1000
_LOGME_TOLERANCE = 1e-5
# Added to the denominators of the alpha/beta updates, as in the reference, so a perfect fit cannot divide by 0.
_LOGME_EPSILON = 1e-5
# H-score's ridge, as a fraction of the mean feature variance: it keeps the inverse finite when features are
# collinear or outnumber the samples, and is too small to move the score of well-conditioned features.
_H_SCORE_RIDGE = 1e-3


@dataclass(frozen=True)
class _Spectrum:
    """The features' SVD, reduced to what the evidence needs: squared singular values and left vectors."""

    u: np.ndarray  # [N, k], k = rank of the features
    sigma: np.ndarray  # [k], squared singular values
    num_samples: int
    num_dims: int


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., ICML 2021): the mean over classes of the log evidence per sample.

    Each class is a one-vs-rest target y = (labels == c), fitted by Bayesian linear regression on the features
    with prior precision alpha and noise precision beta; both are set to maximise the evidence p(y | F, alpha,
    beta) by the fixed-point iteration of the reference implementation (thuml/LogME). One SVD of the features
    serves every class. Like the reference, it returns the fixed point's evidence, even for a class whose
    evidence is highest in the limit alpha -> infinity (features that say nothing about it).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    _check(f, y)
    spectrum = _spectrum(f)
    evidences = [_class_evidence(spectrum, (y == c).astype(np.float64)) for c in np.unique(y)]
    return float(np.mean(evidences)) / spectrum.num_samples


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al., ICIP 2019): trace(cov(f)^-1 cov(E[f | y])).

    How much of the features' variance lies between the class means, weighted by the inverse feature
    covariance; it runs from 0 (class means equal) to C - 1 for C classes.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    _check(f, y)
    f = f - f.mean(axis=0)
    _, inverse = np.unique(y, return_inverse=True)
    onehot = np.eye(inverse.max() + 1)[inverse]
    class_means = (onehot.T @ f) / onehot.sum(axis=0)[:, None]
    g = class_means[inverse]  # E[f | y] for each sample
    cov_f = f.T @ f / len(f)
    cov_g = g.T @ g / len(f)
    ridge = _H_SCORE_RIDGE * np.trace(cov_f) / f.shape[1]
    inv = np.linalg.pinv(cov_f + ridge * np.eye(f.shape[1]), hermitian=True)
    return float(np.sum(inv * cov_g))  # trace(inv @ cov_g) without forming the product


def _check(features: np.ndarray, labels: np.ndarray) -> None:
    if features.ndim != 2 or labels.shape != features.shape[:1] or len(labels) < 2:
        raise ValueError(f"expected features [N, D] and labels [N], N >= 2; got {features.shape} and {labels.shape}")


def _spectrum(f: np.ndarray) -> _Spectrum:
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    # Directions with (numerically) zero singular value carry no signal; the evidence counts them apart.
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    return _Spectrum(u=u[:, keep], sigma=s[keep] ** 2, num_samples=n, num_dims=d)


def _class_evidence(spectrum: _Spectrum, y: np.ndarray) -> float:
    """The maximised log evidence log p(y | F, alpha, beta) of one target column."""
    n = spectrum.num_samples
    x2 = (spectrum.u.T @ y) ** 2  # y's energy along each singular direction
    outside = max(float(y @ y - x2.sum()), 0.0)  # the part of y no linear function of the features reaches
    alpha, beta = 1.0, 1.0
    for _ in range(_LOGME_MAX_STEPS):
        ratio = alpha / beta
        gamma, m2, res2 = _fit_terms(spectrum.sigma, x2, outside, ratio)
        alpha = gamma / (m2 + _LOGME_EPSILON)
        beta = (n - gamma) / (res2 + _LOGME_EPSILON)
        if abs(alpha / beta - ratio) / ratio <= _LOGME_TOLERANCE:
            break
    # The reference evaluates with the posterior mean of the previous step; this one takes the final
    # (alpha, beta)'s own, so the value is exactly the evidence at the (alpha, beta) returned.
    _, m2, res2 = _fit_terms(spectrum.sigma, x2, outside, alpha / beta)
    # log|A| for A = alpha I + beta F^T F: the rank-k directions, plus alpha for each of the D - k null ones
    # (the reference leaves those out, which only matters when N < D).
    log_det = np.sum(np.log(alpha + beta * spectrum.sigma)) + (spectrum.num_dims - len(spectrum.sigma)) * np.log(alpha)
    return float(
        spectrum.num_dims / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - log_det / 2
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )


def _fit_terms(sigma: np.ndarray, x2: np.ndarray, outside: float, ratio: float) -> tuple[float, float, float]:
    """For prior/noise ratio alpha/beta: effective parameter count, |m|^2 and |y - F m|^2 of the posterior mean m."""
    gamma = float(np.sum(sigma / (sigma + ratio)))
    m2 = float(np.sum(sigma * x2 / (ratio + sigma) ** 2))
    res2 = float(np.sum(x2 / (1 + sigma / ratio) ** 2)) + outside
    return gamma, m2, res2
