"""Training data: images / label maps held in memory, and triplet mining.

nordland64 is tiny (64x32 images), so every image of a split is read once, resized
to the network input size and kept as uint8; batches are normalised (RGB) or
SLME-encoded (label maps) on the fly. No DataLoader workers: the machine has two
shared cores, and a single process keeps runs bitwise reproducible.

Mining (NetVLAD-style, §3.3 "hard negatives from far-away database images"): a
descriptor cache of all training queries and database images is computed with the
network being trained and refreshed every ``refresh_every`` steps (or every epoch);
each triplet's negative is the most similar of ``pool_size`` random database images
outside the query's non-negative zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from structvpr_core.data.combine import concat_place_sets, every_nth_place, merge_queries, subset_places
from structvpr_core.data.datasets import GRIEF_SPLITS, PlaceSet, gardenspoint, grief_site, nordland64
from structvpr_core.models.branches import TRUNK_NORMALISATION
from structvpr_core.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, resize_rgb, to_input_tensor
from structvpr_core.data.images import read_rgb
from structvpr_core.segmentation.slme import SLME, SLMEConfig
from structvpr_core.progress import progress
from structvpr_core.train.config import DataConfig, MiningConfig, SourceConfig


def source_split(source: SourceConfig, split: str) -> PlaceSet | None:
    """One source's ``split`` (None where the source has no such split, e.g. GRIEF val)."""
    if source.dataset == "nordland64":
        ps = nordland64(source.root, split)
    elif source.dataset == "gardenspoint":
        ps = merge_queries([gardenspoint(source.root, split, "day_right", q) for q in ("day_left", "night_right")],
                           f"gardenspoint-{split}-day_left+night_right->day_right")
    elif split == "train":  # grief: michigan is the training site
        (site,) = GRIEF_SPLITS["train"]
        ps = grief_site(source.root, site)
    else:
        return None
    return every_nth_place(ps, source.place_stride)


def load_split(data: DataConfig, split: str) -> PlaceSet:
    """The configured data sets' ``split`` side by side, cut to the first N places when asked."""
    parts = [ps for ps in (source_split(s, split) for s in data.source_list()) if ps is not None]
    if not parts:
        raise ValueError(f"none of the data sources {[s.dataset for s in data.source_list()]} has a {split} split")
    place_set = parts[0] if len(parts) == 1 else concat_place_sets(parts, "+".join(p.name for p in parts))
    limit = {"train": data.train_places, "val": data.val_places}.get(split)
    return place_set if limit is None else first_places(place_set, limit)


def first_places(ps: PlaceSet, n: int) -> PlaceSet:
    """The first ``n`` database images and the first ``n`` queries, ground truth clipped to them."""
    return subset_places(ps, np.arange(min(n, len(ps.database))), np.arange(min(n, len(ps.queries))),
                         f"{ps.name}[:{n}]")


def label_path(labels_root: Path, image: Path) -> Path:
    """Where `structvpr segment` put the label PNG of ``image``: <root>/<folder>/<stem>.png."""
    return labels_root / image.parent.name / f"{image.stem}.png"


class InputBank:
    """All images of one side (queries or database) at the network's input size."""

    def __init__(self, images: np.ndarray, slme: SLME | None,
                 normalisation: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)):
        self.images = images  # (N, H, W, 3) RGB uint8, or (N, H, W) label ids when slme is set
        self.slme = slme
        self.normalisation = normalisation  # RGB only: the trunk's (mean, std)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Network input for ``indices`` (``rng`` selects augmented views; images here are not augmented)."""
        items = self.images[np.asarray(indices)]
        if self.slme is None:
            return to_input_tensor(list(items), (items.shape[2], items.shape[1]), *self.normalisation)
        return torch.stack([self.slme(labels) for labels in items])


def cat_batches(batches: list) -> torch.Tensor | list[torch.Tensor]:
    """Concatenate bank batches along the batch axis (tensors, or lists of tensor parts)."""
    if isinstance(batches[0], torch.Tensor):
        return torch.cat(batches)
    return [torch.cat(parts) for parts in zip(*batches)]


def to_device(x: torch.Tensor | list[torch.Tensor], device: torch.device):
    if isinstance(x, torch.Tensor):
        return x.to(device, memory_format=torch.channels_last)
    return [p.to(device, memory_format=torch.channels_last) for p in x]


def rgb_bank(paths: list[Path], size: tuple[int, int], desc: str = "reading images",
             normalisation: tuple = (IMAGENET_MEAN, IMAGENET_STD)) -> InputBank:
    out = np.empty((len(paths), size[1], size[0], 3), np.uint8)
    for i, path in enumerate(progress(paths, desc=desc, unit="img", leave=False)):
        out[i] = resize_rgb(read_rgb(path), size)
    return InputBank(out, None, normalisation)


def label_bank(paths: list[Path], labels_root: Path, size: tuple[int, int], slme: SLMEConfig,
               desc: str = "reading label maps") -> InputBank:
    """Label maps of ``paths`` from the segment cache, resized (nearest: ids stay ids)."""
    out = np.empty((len(paths), size[1], size[0]), np.uint8)
    missing = [p for p in paths if not label_path(labels_root, p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} label maps are missing under {labels_root} "
            f"(e.g. {label_path(labels_root, missing[0])}); run `structvpr segment` on {missing[0].parent} first")
    for i, path in enumerate(progress(paths, desc=desc, unit="img", leave=False)):
        lp = label_path(labels_root, path)
        labels = cv2.imread(str(lp), cv2.IMREAD_UNCHANGED)
        if labels is None or labels.ndim != 2:
            raise ValueError(f"{lp}: not a single-channel label PNG")
        if (labels.shape[1], labels.shape[0]) != tuple(size):
            labels = cv2.resize(labels, tuple(size), interpolation=cv2.INTER_NEAREST)
        out[i] = labels
    return InputBank(out, SLME(slme))


@dataclass
class SplitBanks:
    place_set: PlaceSet
    queries: InputBank
    database: InputBank


def make_banks(place_set: PlaceSet, model_config, labels_root: Path | None) -> SplitBanks:
    size = tuple(model_config.input_size)
    if model_config.branch == "rgb":
        norm = TRUNK_NORMALISATION[model_config.trunk]
        q = rgb_bank(place_set.queries, size, f"{place_set.name} queries", norm)
        db = rgb_bank(place_set.database, size, f"{place_set.name} database", norm)
    else:
        q = label_bank(place_set.queries, labels_root, size, model_config.slme, f"{place_set.name} query labels")
        db = label_bank(place_set.database, labels_root, size, model_config.slme, f"{place_set.name} db labels")
    return SplitBanks(place_set, q, db)


class TripletMiner:
    """Chooses the positive and a hard negative for each (query, positive) pair from a descriptor cache."""

    def __init__(self, place_set: PlaceSet, config: MiningConfig):
        self.place_set = place_set
        self.config = config
        n_db = len(place_set.database)
        self.q_desc: np.ndarray | None = None
        self.db_desc: np.ndarray | None = None
        for q, non_neg in enumerate(place_set.non_negatives):
            if n_db - len(non_neg) < 1:
                raise ValueError(f"{place_set.name}: query {q} has no database image far enough to be a negative")

    def set_cache(self, q_desc: np.ndarray, db_desc: np.ndarray) -> None:
        self.q_desc, self.db_desc = q_desc, db_desc

    def positive(self, q: int) -> int:
        """Exact frame (hard positive), or the most similar soft positive by the cache."""
        ps = self.place_set
        if self.config.positive == "exact" and ps.hard_positives[q].size:
            return int(ps.hard_positives[q][0])
        cands = ps.positives[q]
        if cands.size == 0:
            raise ValueError(f"{ps.name}: query {q} has no positive; it cannot form a triplet")
        return int(cands[np.argmax(self.db_desc[cands] @ self.q_desc[q])])

    def negative(self, q: int, rng: np.random.Generator) -> int:
        non_neg = self.place_set.non_negatives[q]
        n_db = len(self.place_set.database)
        draw = min(n_db, self.config.pool_size + len(non_neg))
        cands = rng.choice(n_db, size=draw, replace=False)
        cands = cands[~np.isin(cands, non_neg)][: self.config.pool_size]
        return int(cands[np.argmax(self.db_desc[cands] @ self.q_desc[q])])


def trainable_queries(place_set: PlaceSet) -> np.ndarray:
    """Queries that have a positive (others cannot form a triplet)."""
    return np.asarray([q for q, pos in enumerate(place_set.positives) if pos.size], np.int64)
