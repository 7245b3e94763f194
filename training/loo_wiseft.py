"""Out-of-source validation of WiSE-FT weight interpolation (docs/realres.md, leave-one-source-out).

Each stage I RGB model trained without a source (training/realres_loo_without_*.yaml) is
interpolated with its ImageNet start, ``alpha * trained + (1 - alpha) * ImageNet`` (every float
tensor, BN statistics included), and evaluated on that source's non-test splits, which it never
saw: Gardens Point val and train, nordland64 val. (GRIEF's only non-test split, michigan, is a
training place set, not a retrieval protocol, so it cannot serve here.) The test splits are never read.

    .venv/bin/python training/loo_wiseft.py --out docs/results/realres_loo_wiseft_val.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.branches import RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.train.config import SourceConfig
from structvpr_core.train.data import make_banks, source_split
from structvpr_core.train.evaluation import split_recalls

HELD_OUT_SPLITS = {"gardenspoint": ("val", "train"), "nordland64": ("val",)}


def interpolate(trained: RGBBranch, start: RGBBranch, alpha: float) -> RGBBranch:
    out = copy.deepcopy(trained)
    theirs = start.state_dict()
    out.load_state_dict({k: alpha * v + (1 - alpha) * theirs[k] if v.is_floating_point() else v
                         for k, v in trained.state_dict().items()})
    return out.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/realres_loo_without_{source}/seed{seed}/stage1-rgb/best.pt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/results/realres_loo_wiseft_val.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    recalls: dict = {}  # source -> split -> alpha -> [R@1 per seed]
    for source, splits in HELD_OUT_SPLITS.items():
        banks = {}
        for seed in args.seeds:
            trained, _ = load_checkpoint(args.runs.format(source=source, seed=seed), expect_branch="rgb")
            start = RGBBranch(trained.config)
            start.load_imagenet()
            for split in splits:
                if split not in banks:
                    banks[split] = make_banks(source_split(SourceConfig(source), split), trained.config, None)
                for alpha in args.alphas:
                    r1 = split_recalls(interpolate(trained, start.eval(), alpha), banks[split], device)["R@1"]
                    recalls.setdefault(source, {}).setdefault(split, {}).setdefault(str(alpha), []).append(r1)
                    print(f"without {source}, seed {seed}: {source} {split} alpha {alpha}: R@1 {r1:.1f}", flush=True)
    summary = {alpha: float(np.mean([np.mean([np.mean(recalls[s][sp][str(alpha)]) for sp in recalls[s]])
                                     for s in recalls])) for alpha in args.alphas}
    atomic_write_text(Path(args.out), json.dumps({"recall@1": recalls, "mean_over_sources": summary}, indent=1))
    print("\nR@1 on the held-out source (mean over seeds); alpha 0 = the ImageNet start, 1 = trained")
    for alpha in args.alphas:
        cells = "  ".join(f"{s} {sp} {np.mean(recalls[s][sp][str(alpha)]):5.1f}" for s in recalls for sp in recalls[s])
        print(f"alpha {alpha:4.2f}: {cells}  mean over sources {summary[alpha]:5.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
