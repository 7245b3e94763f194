"""Architecture settings of StructVPR++ label-level features (our interpretation; see label_features.py).

Kept apart from the modules so that ``ModelConfig`` (branches.py) can carry it without
importing torch modules in a cycle. The same dataclass describes both roles:
the seg-branch teacher (LMC + weighting module + LC) and the RGB student's MLP head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from structvpr_core.config import ConfigError


@dataclass
class LabelFeatureConfig:
    # Number of labels = SLME channels of the teacher's input (6 for the paper's clusters).
    num_labels: int = 6
    # Each label feature is projected to this many dims: descriptor grows by num_labels * label_dim.
    label_dim: int = 64
    # alpha in descriptor = normalize([global, alpha * label]); 1 = both parts count equally.
    label_weight: float = 1.0
    # Teacher: "learned" = the shared weighting module scores each label; "uniform" = every
    # present label weighs 1 (ablation of the weighting module).
    weighting: Literal["learned", "uniform"] = "learned"
    # Hidden width of the teacher's weighting module (Linear-ReLU-Linear-sigmoid).
    weight_hidden: int = 32
    # Hidden width of the student's MLP head (pooled stage maps -> label features).
    student_hidden: int = 512

    def __post_init__(self):
        if self.num_labels < 1 or self.label_dim < 1:
            raise ConfigError(f"label_features needs num_labels >= 1 and label_dim >= 1, "
                              f"got {self.num_labels}, {self.label_dim}")
        if not self.label_weight > 0:
            raise ConfigError(f"label_features.label_weight must be > 0, got {self.label_weight}")
        if self.weight_hidden < 1 or self.student_hidden < 1:
            raise ConfigError("label_features.weight_hidden and student_hidden must be >= 1")

    @property
    def dim(self) -> int:
        """Length of the label part of the descriptor (LC output)."""
        return self.num_labels * self.label_dim
