"""StructVPR++ label-level features: teacher (seg branch + LMC + weighting + LC) and student
(RGB trunk + MLP head). OUR INTERPRETATION of a paper of which only the abstract and the
figure captions are available (shared/seeds/000_*).

What the captions fix:
- Fig. 3: in the seg branch "A refers to the multi-level down-sampled masks" and "Weights
  means the shared weighting module for separate label features"; MLP, LC, MC and LMC are
  the modules that produce the features; stage II yields "label-aware RGB features", and
  inference runs the stage II RGB model only, without segmentation.
- Fig. 5: a multi-level concatenation layer (LMC) and a label-level concatenation layer (LC).
- Abstract: label features are decoupled from the global descriptor so that a pair can be
  aligned semantically (label by label) without segmentation at deployment.

What we chose (none of this is in the captions):
- masks A: SLME presence (channel > 0; the prior weights are dropped) area-pooled to each MC
  stage's resolution by ``slme.multilevel_masks``: a cell holds the fraction the label covers;
- LMC: per label and MC level, the mask-weighted mean of the stage map, L2 per level (as MC
  does), concatenated over levels, then one linear projection shared by all labels to
  ``label_dim`` and L2 -> f_c (keeps the descriptor short: 6 x 64 instead of 6 x 480);
- weighting module: Linear(d, h)-ReLU-Linear(h, 1)-sigmoid, shared by all labels, times
  presence (a label absent from the image weighs 0) -> w_c; "uniform" = presence only;
- LC: L = normalize(concat_c w_c f_c), so L . L' = sum_c w_c w'_c cos(f_c, f'_c) / (|w| |w'|):
  the pair is compared label by label;
- descriptor = normalize([global MC, alpha L]) for teacher and student alike; the teacher is
  trained in stage I with the plain triplet loss on it;
- student: an MLP (Linear-ReLU-Linear) on the GMP and GAP of its MC stage maps (each L2-
  normalised) predicts L for all labels at once (presence is implicit in the prediction),
  L2 -> L_hat. Stage II alignment lives in train/plusplus.py.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from structvpr_core.models import branches
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.segmentation.slme import multilevel_masks


def combine(global_desc: torch.Tensor, label_desc: torch.Tensor, label_weight: float) -> torch.Tensor:
    """Deployment / teacher descriptor: normalize([global, alpha * label])."""
    return F.normalize(torch.cat([global_desc, label_weight * label_desc], dim=1), dim=1)


def split_descriptor(desc: torch.Tensor, global_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo ``combine``: the unit global part and the unit label part (zero if no label was present)."""
    return F.normalize(desc[:, :global_dim], dim=1), F.normalize(desc[:, global_dim:], dim=1)


def label_concat(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """LC: (B, C, d) label features, (B, C) weights -> (B, C*d) unit label descriptor."""
    return F.normalize((weights.unsqueeze(-1) * features).flatten(1), dim=1)


class LabelPooling(nn.Module):
    """LMC: per label, mask-weighted mean of each level's stage map, L2 per level, concat, project, L2."""

    def __init__(self, level_channels: list[int], label_dim: int):
        super().__init__()
        self.project = nn.Linear(sum(level_channels), label_dim)

    def forward(self, maps: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        per_level = []
        for fmap, mask in zip(maps, masks):
            if fmap.shape[-2:] != mask.shape[-2:]:
                raise ValueError(f"mask size {tuple(mask.shape[-2:])} does not match the stage map "
                                 f"{tuple(fmap.shape[-2:])}; input sizes must be multiples of 32")
            area = mask.sum(dim=(2, 3)).clamp_min(1e-6)  # (B, C); absent labels pool to 0
            pooled = torch.einsum("bchw,bkhw->bck", mask, fmap) / area.unsqueeze(-1)
            per_level.append(F.normalize(pooled, dim=2))
        return F.normalize(self.project(torch.cat(per_level, dim=2)), dim=2)


class LabelWeighting(nn.Module):
    """The shared weighting module: one score in (0, 1) per label feature."""

    def __init__(self, label_dim: int, hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(label_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.score(features)).squeeze(-1)


class TeacherLabelHead(nn.Module):
    """Seg branch side: masks from its own SLME input -> LMC -> weighting -> LC."""

    def __init__(self, level_channels: list[int], levels: tuple[int, ...], config: LabelFeatureConfig):
        super().__init__()
        self.levels = tuple(levels)
        self.pooling = LabelPooling(level_channels, config.label_dim)
        self.weighting = LabelWeighting(config.label_dim, config.weight_hidden) if config.weighting == "learned" else None

    def label_parts(self, stages: list[torch.Tensor], slme_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, d) unit label features f_c and (B, C) weights w_c (0 for absent labels)."""
        presence = (slme_input > 0).float()  # SLME: positive prior where the label is, 0 elsewhere
        masks = multilevel_masks(presence, strides=tuple(2 ** lvl for lvl in self.levels))
        features = self.pooling([stages[lvl - 1] for lvl in self.levels], masks)
        present = presence.amax(dim=(2, 3))
        weights = present if self.weighting is None else self.weighting(features) * present
        return features, weights

    def forward(self, stages: list[torch.Tensor], slme_input: torch.Tensor) -> torch.Tensor:
        return label_concat(*self.label_parts(stages, slme_input))


class StudentLabelHead(nn.Module):
    """RGB side: MLP on the pooled MC stage maps predicts the teacher's label descriptor."""

    def __init__(self, level_channels: list[int], levels: tuple[int, ...], config: LabelFeatureConfig):
        super().__init__()
        self.levels = tuple(levels)
        self.mlp = nn.Sequential(nn.Linear(2 * sum(level_channels), config.student_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(config.student_hidden, config.dim))

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for lvl in self.levels:
            fmap = stages[lvl - 1]
            pooled += [F.normalize(torch.amax(fmap, dim=(2, 3)), dim=1), F.normalize(fmap.mean(dim=(2, 3)), dim=1)]
        return F.normalize(self.mlp(torch.cat(pooled, dim=1)), dim=1)


class LabelAwareModel(nn.Module):
    """A branch (trunk + MC) with the label head of its role; forward = [global, label] descriptor.

    Same interface as the plain branches (``config``, ``dim``, ``forward_stages``, ``forward``),
    so checkpoints, encoders, the map database and the node take it unchanged.
    """

    def __init__(self, config: branches.ModelConfig):
        super().__init__()
        if config.label_features is None:
            raise ValueError("LabelAwareModel needs a ModelConfig with label_features")
        self.config = config
        self.trunk = branches.build_branch(replace(config, label_features=None))  # its MC head is the global part
        self.global_dim = self.trunk.dim
        self.dim = config.dim
        chans = [config.stage_channels[lvl - 1] for lvl in config.mc_levels]
        if config.branch == "rgb":  # the encoder normalises input by the trunk's statistics
            self.input_mean, self.input_std = self.trunk.input_mean, self.trunk.input_std
        head = TeacherLabelHead if config.branch == "seg" else StudentLabelHead
        self.label_head = head(chans, config.mc_levels, config.label_features)

    @property
    def stages(self) -> nn.ModuleList:
        return self.trunk.stages

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_stages(x)

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit global MC descriptor, unit label descriptor)."""
        stages = self.forward_stages(x)
        if self.config.branch == "seg":  # the teacher's masks come from its own SLME input
            return self.trunk.head(stages), self.label_head(stages, x)
        return self.parts_from_stages(stages)

    def parts_from_stages(self, stages: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB side only (needs no input image): what the frozen-prefix trainer runs."""
        return self.trunk.head(stages), self.label_head(stages)

    def from_stages(self, stages: list[torch.Tensor]) -> torch.Tensor:
        return combine(*self.parts_from_stages(stages), self.config.label_features.label_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine(*self.forward_parts(x), self.config.label_features.label_weight)
