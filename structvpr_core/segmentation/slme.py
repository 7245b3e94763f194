"""Segmentation Label Map Encoding (SLME, paper §3.2).

A per-pixel class map becomes a C-channel map: classes are first clustered into
groups that play the same role for place recognition, then channel c holds a
positive prior weight wherever cluster c is present and 0 elsewhere. Unknown /
void labels are all-zero.

Cluster tables are data (``slme_tables/*.yaml``), one per label set; the
encoding scheme (how many channels, which weights) is an ``SLMEConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from structvpr_core.config import ConfigError, load_yaml

TABLE_DIR = Path(__file__).resolve().parent / "slme_tables"
TABLE_FILES = {"ade20k": "ade20k_150.yaml", "cityscapes": "cityscapes_19.yaml", "camvid": "camvid_11.yaml"}

# The paper's C=6 clusters, in channel order, and their prior weights (0.5, 0.5, 1, 1, 2, 2).
CLUSTERS_6 = ("vegetation", "dynamic", "sky", "ground", "buildings", "other")
PAPER_WEIGHTS_6 = (0.5, 0.5, 1.0, 1.0, 2.0, 2.0)
# C=3 ablation: {sky & ground, dynamic objects, static objects}.
CLUSTERS_3 = ("sky_ground", "dynamic", "static")
TO_3 = {"sky": 0, "ground": 0, "dynamic": 1, "vegetation": 2, "buildings": 2, "other": 2}


@dataclass
class SLMEConfig:
    label_set: Literal["ade20k", "cityscapes", "camvid"] = "cityscapes"
    # "c6": paper's 6 clusters; "c3": {sky&ground, dynamic, static}; "raw": one channel per class
    scheme: Literal["c6", "c3", "raw"] = "c6"
    # "paper": 0.5,0.5,1,1,2,2 (c6); "unweighted": all 1; "reversed": paper order reversed;
    # "custom": use ``custom_weights``
    weighting: Literal["paper", "unweighted", "reversed", "custom"] = "paper"
    custom_weights: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.weighting == "custom" and len(self.custom_weights) != self.num_channels:
            raise ConfigError(
                f"custom_weights needs {self.num_channels} values for scheme '{self.scheme}', "
                f"got {len(self.custom_weights)}"
            )
        if self.weighting in ("paper", "reversed") and self.scheme == "raw":
            raise ConfigError("scheme 'raw' has no paper prior weights; use 'unweighted' or 'custom'")
        if any(w <= 0 for w in self.custom_weights):
            raise ConfigError("custom_weights must be positive (0 would erase a class)")

    @property
    def num_channels(self) -> int:
        return {"c6": 6, "c3": 3, "raw": load_table(self.label_set).num_classes}[self.scheme]

    def channel_weights(self) -> np.ndarray:
        if self.weighting == "custom":
            return np.asarray(self.custom_weights, np.float32)
        if self.weighting == "unweighted":
            return np.ones(self.num_channels, np.float32)
        if self.scheme == "c6":
            w = np.asarray(PAPER_WEIGHTS_6, np.float32)
        else:  # c3: the c6 prior of each merged group (sky&ground 1, dynamic 0.5, static 2)
            w = np.asarray([1.0, 0.5, 2.0], np.float32)
        return w[::-1].copy() if self.weighting == "reversed" else w


@dataclass(frozen=True)
class ClusterTable:
    label_set: str
    classes: tuple[str, ...]
    cluster_of_class: tuple[int, ...]  # class id -> index into CLUSTERS_6

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@lru_cache(maxsize=None)
def load_table(label_set: str) -> ClusterTable:
    if label_set not in TABLE_FILES:
        raise ConfigError(f"unknown label set '{label_set}'; known: {sorted(TABLE_FILES)}")
    data = load_yaml(TABLE_DIR / TABLE_FILES[label_set])
    classes = tuple(data["classes"])
    if len(classes) != data["num_classes"]:
        raise ConfigError(f"{label_set} table lists {len(classes)} classes, says {data['num_classes']}")
    cluster = [-1] * len(classes)
    wildcard = None
    for ci, name in enumerate(CLUSTERS_6):
        members = data["clusters"][name]
        if members == "*":
            wildcard = ci
            continue
        for cls in members:
            if cls not in classes:
                raise ConfigError(f"{label_set} table: cluster '{name}' names unknown class '{cls}'")
            cluster[classes.index(cls)] = ci
    for i, c in enumerate(cluster):
        if c < 0:
            if wildcard is None:
                raise ConfigError(f"{label_set} table: class '{classes[i]}' is in no cluster")
            cluster[i] = wildcard
    return ClusterTable(label_set, classes, tuple(cluster))


class SLME:
    """Label map (H, W) integer -> weighted one-hot (C, H, W) float32."""

    def __init__(self, config: SLMEConfig):
        self.config = config
        table = load_table(config.label_set)
        weights = config.channel_weights()
        if config.scheme == "raw":
            channel_of_class = np.arange(table.num_classes)
        elif config.scheme == "c6":
            channel_of_class = np.asarray(table.cluster_of_class)
        else:
            channel_of_class = np.asarray([TO_3[CLUSTERS_6[c]] for c in table.cluster_of_class])
        # Lookup over all 256 uint8 labels: void / out-of-table labels map to channel -1 (all zero).
        self._channel = np.full(256, -1, np.int64)
        self._channel[: table.num_classes] = channel_of_class
        self._weights = weights
        self.num_channels = len(weights)

    def __call__(self, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(np.asarray(labels))
        if labels.ndim != 2:
            raise ValueError(f"SLME expects a (H, W) label map, got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() > 255:
            raise ValueError("SLME expects integer class ids in [0, 255]")
        channel = torch.from_numpy(self._channel)[labels.long()]  # (H, W), -1 = void
        out = torch.zeros((self.num_channels + 1, *labels.shape), dtype=torch.float32)
        out.scatter_(0, (channel + 1).unsqueeze(0), 1.0)  # slot 0 collects void
        return out[1:] * torch.from_numpy(self._weights).view(-1, 1, 1)


def multilevel_masks(encoded: torch.Tensor, strides=(8, 16, 32)) -> list[torch.Tensor]:
    """Down-sample an SLME map (C,H,W) or (B,C,H,W) to each stage's resolution.

    Area pooling keeps, per cell, the weighted fraction of each label, which is
    what label-level pooling (StructVPR++ multi-level masks, our interpretation)
    needs. Sizes use ceil division to match stride-2 conv outputs with padding.
    """
    x = encoded.unsqueeze(0) if encoded.dim() == 3 else encoded
    h, w = x.shape[-2:]
    out = [F.adaptive_avg_pool2d(x, (-(-h // s), -(-w // s))) for s in strides]
    return [o.squeeze(0) for o in out] if encoded.dim() == 3 else out
