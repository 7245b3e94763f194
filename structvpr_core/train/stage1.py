"""Stage I (§3.3): triplet training of one branch — RGB (MobileNetV2 + MC) or seg (MobileNet-L + MC on SLME).

Output: <out>/stage1-<branch>/best.pt (the epoch with the best val R@5), state.pt,
history.json, curve.png.
"""

from __future__ import annotations

from pathlib import Path

import torch

from structvpr_core.models.checkpoint import save_checkpoint
from structvpr_core.models.branches import triplet_loss
from structvpr_core.models.factory import build_model
from structvpr_core.train import distributed, frozen_prefix
from structvpr_core.train.config import ExperimentConfig
from structvpr_core.train.data import TripletMiner, load_split, make_banks, trainable_queries
from structvpr_core.train.evaluation import split_recalls
from structvpr_core.train.loop import BEST_FILE, Fit, TripletEpoch, make_optim, run_key, seed_everything, steps_per_epoch


def step_dir(cfg: ExperimentConfig, branch: str) -> Path:
    return cfg.out() / f"stage1-{branch}"


def run_stage1(cfg: ExperimentConfig, branch: str, resume: bool = False) -> dict:
    stage = cfg.stage1_rgb if branch == "rgb" else cfg.stage1_seg
    if stage is None:
        raise ValueError(f"the config has no stage1_{branch} section")
    ctx = distributed.setup(cfg.device)
    try:
        out = step_dir(cfg, branch)
        labels = cfg.labels_root() if branch == "seg" else None
        rng = seed_everything(cfg.seed)
        model = build_model(stage.model)
        if branch == "rgb" and stage.imagenet_weights is not None:
            model.load_imagenet(stage.imagenet_weights)
        model = model.to(ctx.device, memory_format=torch.channels_last)
        train = make_banks(load_split(cfg.data, "train"), stage.model, labels)
        val = make_banks(load_split(cfg.data, "val"), stage.model, labels)
        net, params = model, list(model.parameters())  # net: what the triplet loop runs
        if stage.train_from_stage > 1:
            net, train, val = frozen_prefix.suffix_training(model, stage.train_from_stage, train, val,
                                                            stage.augment, cfg.feature_cache)
            params = net.trainable_parameters()
        queries = trainable_queries(train.place_set)
        n_steps = steps_per_epoch(len(queries), stage.optim.batch_size, ctx.world_size)
        optimizer, scheduler, scaler = make_optim(params, stage.optim.lr, stage.optim.weight_decay,
                                                  stage.optim.epochs * n_steps, ctx.device)
        margin = stage.optim.margin

        def loss_fn(q, p, n, eq, ep, en):
            return triplet_loss(eq, ep, en, margin), {}

        epoch = TripletEpoch(ctx, ctx.wrap(net), net, train, TripletMiner(train.place_set, stage.mining),
                             queries, None, stage.optim.batch_size, stage.mining.refresh_every,
                             optimizer, scheduler, scaler, loss_fn, cfg.eval_batch_size)
        key = run_key(f"stage1-{branch}", cfg.data, stage, cfg.seed)

        def save_best(ep: int, recalls: dict) -> None:
            save_checkpoint(out / BEST_FILE, model, meta={
                "step": f"stage1-{branch}", "epoch": ep, "val": recalls, "seed": cfg.seed,
                "imagenet_weights": stage.imagenet_weights, "run_key": key})

        fit = Fit(ctx, out, stage.optim.epochs, {"model": model}, optimizer, scheduler, scaler, rng, key,
                  f"stage I {branch} seed {cfg.seed}")
        return fit.run(epoch, lambda: split_recalls(net, val, ctx.device, cfg.eval_batch_size), save_best, resume)
    finally:
        distributed.teardown(ctx)

