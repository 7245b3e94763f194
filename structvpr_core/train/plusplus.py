"""StructVPR++ stage II (our interpretation; the model side is models/label_features.py).

The RGB student gets the MLP label head and is aligned to the frozen label-aware teacher.
Loss per triplet (q, p, n), Eq. 6's form extended by the label term; phi(q, p) comes from
the group partition exactly as for StructVPR (the captions fix weighted distillation,
not how the label term enters it; we weight both terms by the same phi):

    triplet(deploy descriptor)
    + sum_{I in q,p,n} phi(q,p) * (global_kd * ||T(g_S(I)) - g_T(I)||^2 + label_kd * ||L_S(I) - L_T(I)||^2)

g = global MC part, L = label part (LC), all unit length; T = linear on the global parts.
Written so that stage2.distillation_loss (phi per (q, p) pair) serves both: the distiller outputs
[deploy | sqrt(global_kd) T(g_S) | sqrt(label_kd) L_S] and the targets are
[sqrt(global_kd) g_T | sqrt(label_kd) L_T], so its one squared distance is the sum above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from structvpr_core.config import ConfigError
from structvpr_core.models.branches import Transform
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.models.label_features import LabelAwareModel, combine, split_descriptor


@dataclass
class PlusPlusConfig:
    """``stage2.plusplus``: present = train a StructVPR++ student (the teacher must be label-aware)."""

    # alpha of the deployed descriptor normalize([global, alpha * label]).
    label_weight: float = 1.0
    # Hidden width of the student's MLP head.
    student_hidden: int = 512
    # Weights of the two alignment terms (0 switches a term off).
    global_kd: float = 1.0
    label_kd: float = 1.0

    def __post_init__(self):
        if not self.label_weight > 0 or self.student_hidden < 1:
            raise ConfigError("stage2.plusplus needs label_weight > 0 and student_hidden >= 1")
        if self.global_kd < 0 or self.label_kd < 0:
            raise ConfigError("stage2.plusplus.global_kd and label_kd must be >= 0")


class LabelDistiller(nn.Module):
    """Student + T as one module (one DDP wrapper): [deploy | sqrt(gk) T(g_S) | sqrt(lk) L_S].

    ``student``: the label-aware model, or its frozen-prefix ``SuffixNet`` (same forward_parts)."""

    def __init__(self, student: nn.Module, transform: Transform, config: PlusPlusConfig):
        super().__init__()
        self.student, self.transform = student, transform
        self.global_scale, self.label_scale = math.sqrt(config.global_kd), math.sqrt(config.label_kd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, label = self.student.forward_parts(x)
        deploy = combine(g, label, self.student.config.label_features.label_weight)
        return torch.cat([deploy, self.global_scale * self.transform(g), self.label_scale * label], dim=1)


def kd_targets(teacher_desc: torch.Tensor, teacher_global_dim: int, config: PlusPlusConfig) -> torch.Tensor:
    """The teacher's [global, label] descriptors -> [sqrt(gk) g_T | sqrt(lk) L_T]."""
    g, label = split_descriptor(teacher_desc, teacher_global_dim)
    return torch.cat([math.sqrt(config.global_kd) * g, math.sqrt(config.label_kd) * label], dim=1)


def label_aware_student(student: nn.Module, teacher_labels: LabelFeatureConfig,
                        config: PlusPlusConfig) -> LabelAwareModel:
    """The student's trunk (its weights kept: ImageNet or stage I) with a fresh MLP label head
    predicting the teacher's labels (same count and label_dim)."""
    labels = LabelFeatureConfig(num_labels=teacher_labels.num_labels, label_dim=teacher_labels.label_dim,
                                label_weight=config.label_weight, student_hidden=config.student_hidden)
    model = LabelAwareModel(replace(student.config, label_features=labels))
    model.trunk.load_state_dict(student.state_dict())
    return model.train(student.training)


def prepare_stage2(student: nn.Module, teacher: nn.Module, config: PlusPlusConfig,
                   t_q: torch.Tensor, t_db: torch.Tensor):
    """-> (label-aware student, kd targets of the queries, of the database)."""
    if not isinstance(teacher, LabelAwareModel):
        raise ConfigError("stage2.plusplus needs a label-aware teacher: set stage1_seg.model.label_features "
                          "and train stage1-seg (and the partition) with it first")
    plus = label_aware_student(student, teacher.config.label_features, config)
    return plus, kd_targets(t_q, teacher.global_dim, config), kd_targets(t_db, teacher.global_dim, config)
