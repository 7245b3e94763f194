"""Gardens Point R@1 per condition on its non-test splits (docs/realres.md, "Generalisation").

For models trained without Gardens Point (training/realres_loo_without_gardenspoint*.yaml) these
splits are unseen data, a larger out-of-source check than the 25-query test sets; the test split
is never read. Each day_left (viewpoint) and night_right (day/night) query set is scored against
day_right separately, at the model's training input size. Models: checkpoint patterns with
``{seed}`` (mean ± std over ``--seeds``) or the untrained ImageNet baselines ``imagenet-lite0`` /
``imagenet-lite0-mc`` (at ``--size``).

    .venv/bin/python training/gardenspoint_conditions.py imagenet-lite0 imagenet-lite0-mc \\
        "runs/realres_loo_without_gardenspoint/seed{seed}/stage1-rgb/best.pt" "runs/realres/seed{seed}/stage1-rgb/best.pt"
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from structvpr_core.arguments import parse_size
from structvpr_core.data.datasets import gardenspoint
from structvpr_core.models.branches import RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.runtime.encoder import IMAGENET_LITE0_LEVELS, baseline_network
from structvpr_core.train.data import make_banks
from structvpr_core.train.evaluation import split_recalls

CONDITIONS = [(split, queries) for split in ("train", "val") for queries in ("day_left", "night_right")]


def load_models(spec: str, seeds: list[int], size: tuple[int, int]) -> list[RGBBranch]:
    if spec in IMAGENET_LITE0_LEVELS:
        return [baseline_network(spec, size)[0].eval()]
    return [load_checkpoint(spec.format(seed=seed), expect_branch="rgb")[0] for seed in seeds]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="checkpoint patterns with {seed}, or imagenet-lite0 / imagenet-lite0-mc")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", default="320x160", help="input size of the ImageNet baselines (the training size)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    banks = {}
    print("| model | " + " | ".join(f"GP {split} {queries}" for split, queries in CONDITIONS) + " |")
    print("|---|" + "---:|" * len(CONDITIONS))
    for spec in args.models:
        recalls = {c: [] for c in CONDITIONS}
        for model in load_models(spec, args.seeds, parse_size(args.size)):
            for split, queries in CONDITIONS:
                key = (split, queries, model.config.input_size)
                if key not in banks:
                    banks[key] = make_banks(gardenspoint(None, split, "day_right", queries), model.config, None)
                recalls[(split, queries)].append(split_recalls(model, banks[key], torch.device("cpu"))["R@1"])
        cells = [f"{np.mean(v):.1f}" + (f" ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else "") for v in recalls.values()]
        print(f"| {spec} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
