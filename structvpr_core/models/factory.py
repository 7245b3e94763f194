"""``build_model``: the network a ``ModelConfig`` describes.

Kept apart from ``branches`` and ``label_features`` so neither imports the other
back: label-aware models are built on a branch, and this module knows both.
"""

from __future__ import annotations

import torch.nn as nn

from structvpr_core.models.branches import ModelConfig, build_branch
from structvpr_core.models.label_features import LabelAwareModel


def build_model(config: ModelConfig) -> nn.Module:
    return LabelAwareModel(config) if config.label_features is not None else build_branch(config)
