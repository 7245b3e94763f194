"""Stage II (§3.5): weighted knowledge distillation from the frozen seg branch into a fresh RGB student.

Loss (Eq. 5-6) per triplet (q, p, n) built from the partition table's (q, p) pairs:
    triplet(x_D) + sum_{I in q,p,n} phi(q, p) * || x_S(I) - T(x_D(I)) ||^2
x_D = student descriptor (448-d), T = linear 448 -> 480, x_S = teacher (stage I seg
branch, frozen) descriptor of the same image's label map. phi comes from the kd
config (Eq. 4 / Eq. 7 / constants / all / none) applied to the table's ranks x, y,
so every arm of the ablation is this one code path with a different config.
Output: <out>/stage2-<name>/best.pt = the student alone (what gets deployed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
from structvpr_core.models.branches import RGBBranch, Transform, triplet_loss
from structvpr_core.train import distributed, frozen_prefix
from structvpr_core.train.config import ExperimentConfig
from structvpr_core.train.data import TripletMiner, load_split, make_banks
from structvpr_core.train.evaluation import encode_bank, split_recalls
from structvpr_core.train.loop import BEST_FILE, Fit, TripletEpoch, make_optim, run_key, seed_everything, steps_per_epoch
from structvpr_core.train.plusplus import LabelDistiller, prepare_stage2
from structvpr_core.train.partition import TABLE_FILE, group_ratios, read_table, weight_fn
from structvpr_core.train.stage1 import step_dir


def stage2_dir(cfg: ExperimentConfig) -> Path:
    return cfg.out() / f"stage2-{cfg.stage2.name}"


class PairWeights:
    """phi of each (q, p) pair of the partition table: a query with several positives has one phi per pair."""

    def __init__(self, q: np.ndarray, p: np.ndarray, phi: np.ndarray):
        self._phi: dict[tuple[int, int], float] = {}
        for qi, pi, w in zip(q.tolist(), p.tolist(), phi.tolist()):
            if self._phi.setdefault((qi, pi), w) != w:
                raise ValueError(f"the partition table gives the pair (q {qi}, p {pi}) two weights")

    def __call__(self, q: np.ndarray, p: np.ndarray) -> np.ndarray:
        try:
            return np.array([self._phi[(qi, pi)] for qi, pi in zip(q.tolist(), p.tolist())], np.float32)
        except KeyError as e:
            raise ValueError(f"pair (q, p) = {e.args[0]} is not in the partition table") from None


def distillation_loss(eq: torch.Tensor, ep: torch.Tensor, en: torch.Tensor,
                      teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor], phi: torch.Tensor,
                      dim: int, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 6 for a batch of triplets; returns ``(total, triplet, kd)``.

    ``eq, ep, en``: Distiller outputs [x_D | T(x_D)] (B x (dim + teacher dim)) of the query,
    positive and negative images; ``teacher``: x_S of the same three images; ``phi``: (B,)
    weight of each triplet's (q, p) pair. kd = mean over the batch of
    phi * sum over {q, p, n} of ||x_S - T(x_D)||^2 (squared L2, not averaged over dimensions).
    """
    vpr = triplet_loss(eq[:, :dim], ep[:, :dim], en[:, :dim], margin)
    sq = sum(((t - e[:, dim:]) ** 2).sum(dim=1) for t, e in zip(teacher, (eq, ep, en)))
    kd = (phi * sq).mean()
    return vpr + kd, vpr, kd


class Distiller(nn.Module):
    """Student + T as one module (one DDP wrapper): output = [x_D | T(x_D)]."""

    def __init__(self, student: nn.Module, transform: Transform):
        super().__init__()
        self.student, self.transform = student, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = self.student(x)
        return torch.cat([xd, self.transform(xd)], dim=1)


def run_stage2(cfg: ExperimentConfig, resume: bool = False) -> dict:
    stage = cfg.stage2
    if stage is None or cfg.stage1_rgb is None:
        raise ValueError("stage II needs the config's stage2 and stage1_rgb sections")
    ctx = distributed.setup(cfg.device)
    try:
        out = stage2_dir(cfg)
        rng = seed_everything(cfg.seed)
        train = load_split(cfg.data, "train")
        table = read_table(cfg.out() / "partition" / TABLE_FILE)
        if table["q"].max() >= len(train.queries) or table["p"].max() >= len(train.database):
            raise ValueError("the partition table does not fit the training split (was it made with other data?)")

        teacher, teacher_payload = load_checkpoint(step_dir(cfg, "seg") / "best.pt", expect_branch="seg")
        teacher = teacher.to(ctx.device, memory_format=torch.channels_last).requires_grad_(False)
        # The teacher is frozen and sees no augmentation: its descriptors are computed once.
        seg_train = make_banks(train, teacher.config, cfg.labels_root())
        t_q = torch.from_numpy(encode_bank(teacher, seg_train.queries, ctx.device, cfg.eval_batch_size)).to(ctx.device)
        t_db = torch.from_numpy(encode_bank(teacher, seg_train.database, ctx.device, cfg.eval_batch_size)).to(ctx.device)
        del seg_train

        if stage.student_init == "stage1":
            student, _ = load_checkpoint(step_dir(cfg, "rgb") / "best.pt", expect_branch="rgb")
            student.train()
        else:
            student = RGBBranch(cfg.stage1_rgb.model)
            if stage.imagenet_weights is not None:
                student.load_imagenet(stage.imagenet_weights)
        if stage.plusplus is not None:  # StructVPR++: label head on the student, label-level targets
            student, t_q, t_db = prepare_stage2(student, teacher, stage.plusplus, t_q, t_db)
        student = student.to(ctx.device, memory_format=torch.channels_last)
        rgb_train = make_banks(train, student.config, None)
        val = make_banks(load_split(cfg.data, "val"), student.config, None)
        student_net = student  # what the triplet loop runs
        if stage.train_from_stage > 1:
            student_net, rgb_train, val = frozen_prefix.suffix_training(
                student, stage.train_from_stage, rgb_train, val, stage.augment, cfg.feature_cache)
        if stage.plusplus is None:
            distiller = Distiller(student_net, Transform(student.dim, teacher.dim))
        else:
            distiller = LabelDistiller(student_net, Transform(student.global_dim, teacher.global_dim), stage.plusplus)
        distiller = distiller.to(ctx.device, memory_format=torch.channels_last)
        params = (list(distiller.transform.parameters()) + student_net.trainable_parameters()
                  if stage.train_from_stage > 1 else list(distiller.parameters()))

        kd = stage.kd
        phi, clipped = weight_fn(table["x"], table["y"], cfg.partition.nt, cfg.partition.nm,
                                 kd.grouping, kd.weights, kd.constant)
        pair_phi = PairWeights(table["q"], table["p"], phi)
        if ctx.is_main:
            used = float((phi > 0).mean())
            print(f"[stage II {stage.name}] kd {kd.grouping}/{kd.weights} {kd.constant or ''}: "
                  f"{100 * used:.1f}% of {len(phi)} pairs distilled, mean phi {phi.mean():.3f}"
                  f"{f', {clipped} negative phi clipped to 0' if clipped else ''}", flush=True)

        n_steps = steps_per_epoch(len(table["q"]), stage.optim.batch_size, ctx.world_size)
        optimizer, scheduler, scaler = make_optim(params, stage.optim.lr, stage.optim.weight_decay,
                                                  stage.optim.epochs * n_steps, ctx.device)
        margin, dim = stage.optim.margin, student.dim

        def loss_fn(q, p, n, eq, ep, en):
            w = torch.from_numpy(pair_phi(q, p)).to(ctx.device)
            total, vpr, kd_loss = distillation_loss(eq, ep, en, (t_q[q], t_db[p], t_db[n]), w, dim, margin)
            return total, {"triplet": vpr.item(), "kd": kd_loss.item()}

        epoch = TripletEpoch(ctx, ctx.wrap(distiller), student_net, rgb_train, TripletMiner(train, stage.mining),
                             table["q"], table["p"], stage.optim.batch_size, stage.mining.refresh_every,
                             optimizer, scheduler, scaler, loss_fn, cfg.eval_batch_size)
        key = run_key("stage2", cfg.data, cfg.partition, stage, cfg.stage1_rgb.model, cfg.seed,
                      teacher_payload["sha256"])

        def save_best(ep: int, recalls: dict) -> None:
            save_checkpoint(out / BEST_FILE, student, meta={
                "step": f"stage2-{stage.name}", "epoch": ep, "val": recalls, "seed": cfg.seed,
                "kd": {"grouping": kd.grouping, "weights": kd.weights, "constant": kd.constant},
                "student_init": stage.student_init, "teacher_sha256": teacher_payload["sha256"],
                "group_ratios": group_ratios(table["x"], table["y"], cfg.partition.nt), "run_key": key})

        fit = Fit(ctx, out, stage.optim.epochs, {"distiller": distiller}, optimizer, scheduler, scaler, rng, key,
                  f"stage II {stage.name} seed {cfg.seed}")
        return fit.run(epoch, lambda: split_recalls(student_net, val, ctx.device, cfg.eval_batch_size), save_best,
                       resume)
    finally:
        distributed.teardown(ctx)
