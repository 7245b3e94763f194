"""Ingredients for re-ranking candidates by geometric verification, and a calibrated score.

- ``rerank_order``: the top-K candidates of the global descriptor, reordered by verified
  inliers (ties, e.g. all unverifiable with 0 inliers, keep the global order). Inliers, not
  the global score, are what tell a true place from a look-alike once the candidates are
  close (benchmarks/local_features.py: XFeat inliers separate true from wrong Gardens Point
  pairs far better than any global score threshold could).
- ``InlierCalibration`` / ``verification_score``: P(same place | inliers) as a logistic in
  the inlier count, fitted per feature kind on labelled pairs (``fit_inlier_calibration``,
  maximum likelihood); benchmarks/local_features.py reports the fit (Gardens Point val, as
  many true as wrong pairs). The detector decides on inliers alone (``min_inliers``): a
  score combining them with the global / sequence score was measured on the val missions
  and published fewer right loop closures at precision 1.0 (docs/loop_closure.md).
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


def verification_score(inliers: int | np.ndarray, calibration: InlierCalibration) -> float | np.ndarray:
    """P(same place | inliers) in (0, 1) under ``calibration``."""
    z = (np.asarray(inliers, np.float64) - calibration.midpoint) / calibration.scale
    p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic, without overflow for large |z|
    return float(p) if np.ndim(p) == 0 else p


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
