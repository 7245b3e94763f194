"""Ingredients for re-ranking candidates by geometric verification, and a calibrated score.

- ``rerank_order``: the top-K candidates of the global descriptor, reordered by verified
  inliers (ties, e.g. all unverifiable with 0 inliers, keep the global order). Inliers, not
  the global score, are what tell a true place from a look-alike once the candidates are
  close (benchmarks/local_features.py: XFeat inliers separate true from wrong Gardens Point
  pairs far better than any global score threshold could).
- ``InlierCalibration`` / ``verification_score``: P(same place | inliers) as a logistic in
  the inlier count, fitted per feature kind on labelled pairs (``fit_inlier_calibration``,
  maximum likelihood). The fitted values are a measurement: benchmarks/local_features.py
  stores them (Gardens Point val, both conditions pooled, as many true as wrong pairs, so the
  probability is under a 0.5 prior), and ``shipped_calibration`` returns that run's values.
  They hold for the 640x480 input, the feature count and the default USAC estimator they
  were fitted with. ``combined_score`` joins it with a probability from the global (or
  sequence) score as independent evidence (naive Bayes in log-odds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from structvpr_core.config import ConfigError


@dataclass(frozen=True)
class InlierCalibration:
    """P(true | n inliers) = sigmoid((n - midpoint) / scale)."""

    midpoint: float  # inliers at which a candidate is as likely true as wrong
    scale: float  # inliers per unit of log-odds (smaller = sharper)

    def __post_init__(self):
        if not (math.isfinite(self.midpoint) and math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"inlier calibration needs a finite midpoint and a scale > 0, "
                              f"got midpoint={self.midpoint}, scale={self.scale}")


# (kind, max_features) -> fit on Gardens Point val 140..164, night_right + day_left -> day_right,
# 640x480, essential-matrix USAC inliers, 250 true + 250 wrong pairs per kind
# (benchmarks/results/local_features_val_{512,1024}_cpu.json, "inlier_calibration_essential_usac")
_SHIPPED = {("orb", 512): InlierCalibration(7.52, 3.05), ("orb", 1024): InlierCalibration(9.29, 2.69),
            ("xfeat", 512): InlierCalibration(4.54, 2.04), ("xfeat", 1024): InlierCalibration(10.56, 2.87)}


def shipped_calibration(kind: str, max_features: int) -> InlierCalibration:
    """The measured calibration for ``kind`` at ``max_features`` keypoints (see ``_SHIPPED``)."""
    try:
        return _SHIPPED[(kind, int(max_features))]
    except KeyError:
        raise KeyError(f"no inlier calibration measured for {kind} with {max_features} keypoints (have "
                       f"{sorted(_SHIPPED)}): fit one with fit_inlier_calibration on labelled pairs "
                       f"(benchmarks/local_features.py --max-features {max_features})") from None


def verification_score(inliers: int | np.ndarray, calibration: InlierCalibration) -> float | np.ndarray:
    """P(same place | inliers) in (0, 1) under ``calibration``."""
    z = (np.asarray(inliers, np.float64) - calibration.midpoint) / calibration.scale
    p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic, without overflow for large |z|
    return float(p) if np.ndim(p) == 0 else p


def combined_score(global_probability: float, verification_probability: float, prior: float = 0.5) -> float:
    """Posterior of two independent pieces of evidence, each a calibrated probability obtained
    under the same ``prior``: logit(post) = logit(p1) + logit(p2) - logit(prior)."""
    for name, p in (("global_probability", global_probability), ("verification_probability", verification_probability),
                    ("prior", prior)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    eps = 1e-12

    def logit(p: float) -> float:
        p = min(max(p, eps), 1 - eps)
        return math.log(p / (1 - p))

    z = logit(global_probability) + logit(verification_probability) - logit(prior)
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def rerank_order(global_scores, inliers) -> np.ndarray:
    """Indices of the candidates, most inliers first; equal inliers keep the higher global score first."""
    g, n = np.asarray(global_scores, np.float64), np.asarray(inliers, np.int64)
    if g.shape != n.shape or g.ndim != 1:
        raise ValueError(f"global_scores and inliers must be equal-length 1-d, got {g.shape} and {n.shape}")
    return np.lexsort((-g, -n))


def fit_inlier_calibration(inliers, is_true, iterations: int = 100) -> InlierCalibration:
    """Maximum-likelihood logistic fit of labelled pairs (Newton's method on 2 parameters)."""
    x = np.asarray(inliers, np.float64)
    y = np.asarray(is_true, np.float64)
    if x.shape != y.shape or x.ndim != 1 or not (0 < y.sum() < len(y)):
        raise ValueError("fit_inlier_calibration needs equal-length 1-d inliers and labels with both classes")
    # separable data has no finite maximum: a weak Gaussian prior (ridge) keeps the fit finite
    X = np.stack([np.ones_like(x), x], axis=1)
    w = np.zeros(2)
    ridge = np.diag([1e-6, 1e-4])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -50, 50)))
        grad = X.T @ (p - y) + ridge @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    if w[1] <= 0:
        raise ValueError("inliers do not increase the odds of a true pair in this data: no calibration")
    return InlierCalibration(midpoint=float(-w[0] / w[1]), scale=float(1.0 / w[1]))
