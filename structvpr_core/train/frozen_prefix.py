"""Train only the last stage(s) of an ImageNet trunk, on features cached once.

With two CPU cores and a few thousand training images, fine-tuning a whole trunk is
both slow and harmful: small data overfits and the ImageNet start's transfer to unseen
places is lost (DESIGN.md, "Deployment facts"). So stages 1..start-1 stay frozen at
their ImageNet weights, and their outputs are computed once per image and kept in
memory (float16), for the clean image and for ``augment.views`` augmented copies
(lighting / season / small viewpoint change, ``augment.py``). Training then runs
stages start.. and the heads only, drawing a random augmented view per image.

The model is an ``RGBBranch`` or a StructVPR++ ``LabelAwareModel`` (RGB side): its MC head
global-max-pools each level, its label head also average-pools, and a frozen level below
the start stage is cached as the 1x2 map [GMP, 2 GAP - GMP], whose max is the GMP and
whose mean is the GAP, so both heads see the numbers they would see on the full image.

``FeatureBank`` has the ``InputBank`` interface (``batch(indices, rng)``), and
``SuffixNet`` turns a batch of cached parts into the descriptor, so the triplet loop,
mining and validation are the same code for both paths. The cache is written to disk,
keyed by everything it depends on, so the arms and seeds of one experiment share it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from structvpr_core.io_utils import atomic_write
from structvpr_core.models.branches import RGBBranch
from structvpr_core.models.label_features import LabelAwareModel
from structvpr_core.progress import progress
from structvpr_core.train.augment import AugmentConfig, augment_batch
from structvpr_core.train.data import InputBank, SplitBanks

Parts = list[torch.Tensor]
Model = RGBBranch | LabelAwareModel


def cached_levels(model: Model, start: int) -> tuple[list[int], int]:
    """MC levels pooled from frozen stages (stored pooled), and the frozen stage whose map feeds ``start``."""
    if not 2 <= start <= len(model.stages):
        raise ValueError(f"train_from_stage must be in 2..{len(model.stages)} to cache a frozen prefix, got {start}")
    return [lvl for lvl in model.config.mc_levels if lvl < start - 1], start - 1


class SuffixNet(nn.Module):
    """Stages ``start``.. of ``model`` + its heads, fed with cached prefix parts.

    parts = [[GMP, 2 GAP - GMP] of each MC level below start-1, as (B, C, 1, 2)]
    + [map of stage start-1]. Same interface as the model (``config``, ``dim``, ``forward``;
    ``forward_parts`` for a label-aware one), so the training loops take either.
    """

    def __init__(self, model: Model, start: int):
        super().__init__()
        self.model, self.start = model, start
        self.pooled_levels, self.input_stage = cached_levels(model, start)
        self.config, self.dim = model.config, model.dim

    def trainable_parameters(self):
        # the suffix stages and any head with weights (the StructVPR++ label head)
        suffix = [p for stage in self.model.stages[self.start - 1:] for p in stage.parameters()]
        heads = [p for name, p in self.model.named_parameters() if not name.startswith(("stages.", "trunk."))]
        return suffix + heads

    def train(self, mode: bool = True):
        # Batch-norm statistics stay at their ImageNet values: triplet batches of a few
        # dozen images from mixed data sets would make them noisy and data-set specific.
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def stage_maps(self, parts: Parts) -> list[torch.Tensor | None]:
        maps: list[torch.Tensor | None] = [None] * len(self.model.stages)
        for lvl, pooled in zip(self.pooled_levels, parts[:-1]):
            maps[lvl - 1] = pooled
        x = maps[self.input_stage - 1] = parts[-1]
        for i in range(self.start - 1, len(self.model.stages)):
            x = maps[i] = self.model.stages[i](x)
        return maps

    def forward_parts(self, parts: Parts) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.parts_from_stages(self.stage_maps(parts))

    def forward(self, parts: Parts) -> torch.Tensor:
        return self.model.from_stages(self.stage_maps(parts))


class FeatureBank:
    """Cached prefix parts of every image: view 0 clean, views 1..V augmented."""

    def __init__(self, parts: Parts):
        self.parts = parts  # each (V + 1, N, C, h, w) float16

    def __len__(self) -> int:
        return self.parts[0].shape[1]

    @property
    def views(self) -> int:
        return self.parts[0].shape[0] - 1

    def batch(self, indices, rng: np.random.Generator | None = None) -> Parts:
        """Clean view without ``rng`` (mining cache, validation); a random augmented view with it."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        if rng is None or self.views == 0:
            view = torch.zeros(len(idx), dtype=torch.long)
        else:
            view = torch.as_tensor(rng.integers(1, self.views + 1, size=len(idx)), dtype=torch.long)
        return [p[view, idx].float() for p in self.parts]


def pooled_max_mean(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 2) [GMP, 2 GAP - GMP]: max = GMP, mean = GAP (GAP <= GMP)."""
    gmp, gap = fmap.amax(dim=(2, 3), keepdim=True), fmap.mean(dim=(2, 3), keepdim=True)
    return torch.cat([gmp, 2 * gap - gmp], dim=3)


@torch.no_grad()
def compute_parts(model: Model, bank: InputBank, start: int, augment: AugmentConfig, seed: int,
                  batch_size: int = 32, desc: str = "caching frozen features") -> Parts:
    """Run the frozen stages over every image of ``bank`` (clean + augmented views)."""
    pooled_levels, input_stage = cached_levels(model, start)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in bank.normalisation)
    out: list[list[list[torch.Tensor]]] = [[] for _ in range(augment.views + 1)]
    bar = progress(total=len(bank) * (augment.views + 1), desc=desc, unit="img", leave=False)
    for view in range(augment.views + 1):
        for s in range(0, len(bank), batch_size):
            rgb = torch.from_numpy(bank.images[s:s + batch_size]).permute(0, 3, 1, 2).float() / 255.0
            if view:
                rgb = augment_batch(rgb, augment, gen)
            x = ((rgb - mean) / std).contiguous(memory_format=torch.channels_last)
            maps = []
            for stage in model.stages[:input_stage]:
                x = stage(x)
                maps.append(x)
            parts = [pooled_max_mean(maps[lvl - 1]) for lvl in pooled_levels] + [maps[-1]]
            out[view].append([p.half().contiguous() for p in parts])
            bar.update(len(rgb))
    bar.close()
    n_parts = len(out[0][0])
    return [torch.stack([torch.cat([b[k] for b in out[v]]) for v in range(len(out))]) for k in range(n_parts)]


def cache_key(model: Model, bank_paths: list[Path], size, start: int, augment: AugmentConfig, seed: int) -> str:
    prefix = {f"stages.{i}.{k}": v for i in range(start - 1) for k, v in model.stages[i].state_dict().items()}
    h = hashlib.sha256()
    for k in sorted(prefix):
        h.update(k.encode())
        h.update(prefix[k].detach().float().numpy().tobytes())
    # the parts depend on which levels are pooled below ``start``, not on the levels after it, so
    # heads that differ only in their trained levels (e.g. 3-5 vs 3-6) share one cache
    h.update(json.dumps([[str(p) for p in bank_paths], list(size), start, augment.__dict__, seed,
                         list(cached_levels(model, start)), model.config.padding, "pooled:max,2mean-max"],
                        sort_keys=True).encode())
    return h.hexdigest()[:20]


def feature_bank(model: Model, bank: InputBank, paths: list[Path], start: int, augment: AugmentConfig,
                 seed: int, cache_dir: Path | None, desc: str) -> FeatureBank:
    """``compute_parts`` through an on-disk cache (tensors only: loads with weights_only=True)."""
    size = (bank.images.shape[2], bank.images.shape[1])
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"prefix-{cache_key(model, paths, size, start, augment, seed)}.pt"
        if path.is_file():
            return FeatureBank(torch.load(path, map_location="cpu", weights_only=True))
    parts = compute_parts(model, bank, start, augment, seed, desc=desc)
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(parts, tmp))
    return FeatureBank(parts)


def feature_banks(model: Model, banks: SplitBanks, start: int, augment: AugmentConfig, seed: int,
                  cache_dir: Path | None) -> SplitBanks:
    """``banks`` (images) -> the same split as cached prefix features."""
    ps = banks.place_set
    return SplitBanks(
        ps,
        feature_bank(model, banks.queries, ps.queries, start, augment, seed, cache_dir, f"{ps.name} queries"),
        feature_bank(model, banks.database, ps.database, start, augment, seed, cache_dir, f"{ps.name} database"),
    )


# The augmented views are data, not training randomness: one fixed seed lets every arm and
# seed of an experiment share the cache (the run seed still drives order, mining and init).
AUGMENT_SEED = 0


def suffix_training(model: Model, start: int, train: SplitBanks, val: SplitBanks, augment: AugmentConfig,
                    cache_dir: str | None) -> tuple[SuffixNet, SplitBanks, SplitBanks]:
    """Freeze ``model``'s stages before ``start``; the train / val image banks become feature banks."""
    model.requires_grad_(False)
    net = SuffixNet(model, start)
    for p in net.trainable_parameters():
        p.requires_grad_(True)
    cache = Path(cache_dir) if cache_dir else None
    return (net, feature_banks(model, train, start, augment, AUGMENT_SEED, cache),
            feature_banks(model, val, start, AugmentConfig(views=0), AUGMENT_SEED, cache))
