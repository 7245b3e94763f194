"""Learned PCA whitening of a global descriptor (Jégou & Chum, ECCV 2012; the post-processing
most CNN retrieval descriptors use, e.g. NetVLAD's PCA-w, Radenović et al.'s learned whitening).

Fitted once, after training, on the training split's descriptors: centre, rotate onto the
principal axes, divide each axis by its spread, keep the first ``out_dim`` axes, L2-normalise.
Dimensions that vary a lot between all images (lighting, season: what makes places look
alike or different regardless of place) weigh less; rare, discriminative ones weigh more.
``shrink`` regularises the division (eigenvalue + shrink x the largest eigenvalue), so axes
with almost no variance in the training data are not blown up: 0 = plain PCA-whitening,
large = plain PCA rotation. ``structvpr train whiten`` fits it and picks ``shrink`` on val.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Whitening(nn.Module):
    """y = normalize((x - mean) @ projection); buffers, not parameters (fitted, not trained)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("projection", torch.zeros(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize((x - self.mean.to(x.dtype)) @ self.projection.to(x.dtype), dim=1)


def fit_whitening(descriptors: np.ndarray, out_dim: int, shrink: float) -> Whitening:
    """PCA-whitening of ``descriptors`` (N, D) to ``out_dim`` axes, regularised by ``shrink`` >= 0."""
    x = np.asarray(descriptors, np.float64)
    if x.ndim != 2 or not 1 <= out_dim <= x.shape[1]:
        raise ValueError(f"need (N, D) descriptors and 1 <= out_dim <= D, got {x.shape} and {out_dim}")
    if len(x) <= out_dim:
        raise ValueError(f"{len(x)} descriptors cannot fit a {out_dim}-d whitening: need more than {out_dim}")
    if shrink < 0 or not np.isfinite(shrink):
        raise ValueError(f"shrink must be a finite number >= 0, got {shrink}")
    mean = x.mean(axis=0)
    eigenvalues, axes = np.linalg.eigh(np.cov((x - mean).T))
    order = np.argsort(eigenvalues)[::-1][:out_dim]
    scale = np.sqrt(np.maximum(eigenvalues[order], 0.0) + shrink * eigenvalues.max() + 1e-12)
    whitening = Whitening(x.shape[1], out_dim)
    whitening.mean.copy_(torch.from_numpy(mean))
    whitening.projection.copy_(torch.from_numpy(axes[:, order] / scale))
    return whitening
