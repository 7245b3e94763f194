"""The pieces every training step shares: the triplet epoch, the epoch loop with
validation / best-checkpoint / resumable state, and the training-curve plot."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # tqdm.write: a message that leaves a bar intact

from structvpr_core.config import to_dict
from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.train.data import SplitBanks, TripletMiner, cat_batches, to_device
from structvpr_core.train import distributed
from structvpr_core.train.distributed import DistContext
from structvpr_core.train.evaluation import encode_bank
from structvpr_core.train.state import load_state, save_state
from structvpr_core.progress import progress

STATE_FILE, BEST_FILE, HISTORY_FILE, CURVE_FILE = "state.pt", "best.pt", "history.json", "curve.png"
DDP_FILE = "ddp.json"


def run_key(*parts) -> str:
    """Short hash of the configuration a run depends on (a state file only resumes its own run)."""
    text = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def make_optim(params, lr: float, weight_decay: float, total_steps: int, device: torch.device):
    """AdamW + cosine decay over all steps (per-step schedule) + AMP scaler (active on CUDA only)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    return optimizer, scheduler, scaler


def steps_per_epoch(num_items: int, batch_size: int, world_size: int) -> int:
    global_batch = batch_size * world_size
    if num_items < global_batch:
        raise ValueError(f"{num_items} training pairs cannot fill one global batch of "
                         f"{batch_size} x {world_size} ranks; lower optim.batch_size")
    return num_items // global_batch


# (q, p, n, emb_q, emb_p, emb_n) -> (loss, {"name": value} for the log)
LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor],
                  tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TripletEpoch:
    """One pass over ``queries`` (with fixed positives if given) as (q, p, hard n) triplets."""

    ctx: DistContext
    model: torch.nn.Module  # the trained network, DDP-wrapped when distributed
    encoder: torch.nn.Module  # the same network unwrapped: fills the mining cache
    banks: SplitBanks
    miner: TripletMiner
    queries: np.ndarray
    positives: np.ndarray | None
    batch_size: int
    refresh_every: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: LossFn
    eval_batch_size: int = 256

    def refresh_cache(self) -> None:
        self.ctx.sync_buffers(self.encoder)
        dev = self.ctx.device
        self.miner.set_cache(encode_bank(self.encoder, self.banks.queries, dev, self.eval_batch_size),
                             encode_bank(self.encoder, self.banks.database, dev, self.eval_batch_size))

    def __call__(self, epoch: int, rng: np.random.Generator) -> dict[str, float]:
        ctx = self.ctx
        n_steps = steps_per_epoch(len(self.queries), self.batch_size, ctx.world_size)
        order = rng.permutation(len(self.queries))
        sums: dict[str, float] = {}
        t0, n_images = time.perf_counter(), 0
        self.model.train()  # checkpoints load in eval mode; encode_bank restores whatever mode it found
        bar = progress(range(n_steps), desc=f"epoch {epoch + 1}", unit="step", leave=False, disable=not ctx.is_main)
        for step in bar:
            if step == 0 or (self.refresh_every and step % self.refresh_every == 0):
                self.refresh_cache()
            # Every rank mines the whole global batch with the same RNG (identical draws), then
            # keeps its own slice: ranks never drift apart and never need to exchange indices.
            chosen = order[step * self.batch_size * ctx.world_size:(step + 1) * self.batch_size * ctx.world_size]
            q = self.queries[chosen]
            p = (np.asarray([self.miner.positive(i) for i in q]) if self.positives is None
                 else self.positives[chosen])
            n = np.asarray([self.miner.negative(i, rng) for i in q])
            mine = slice(ctx.rank * self.batch_size, (ctx.rank + 1) * self.batch_size)
            q, p, n = q[mine], p[mine], n[mine]
            x = to_device(cat_batches([self.banks.queries.batch(q, rng), self.banks.database.batch(p, rng),
                                       self.banks.database.batch(n, rng)]), ctx.device)
            with torch.autocast(ctx.device.type, enabled=ctx.device.type == "cuda"):
                emb = self.model(x).float()
            eq, ep, en = emb.split(len(q))
            loss, parts = self.loss_fn(q, p, n, eq, ep, en)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            n_images += 3 * len(q)
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (step + 1):.4f}" for k, v in sums.items()})
        ctx.sync_buffers(self.model)
        seconds = time.perf_counter() - t0
        stats = {k: v / n_steps for k, v in sums.items()}
        stats.update(lr=self.scheduler.get_last_lr()[0], seconds=seconds, images_per_s=n_images / seconds)
        return stats


@dataclass
class Fit:
    """Epoch loop: train, validate (val split only), keep the best val R@5, save state every epoch."""

    ctx: DistContext
    out_dir: Path
    epochs: int
    modules: dict[str, torch.nn.Module]  # unwrapped modules whose weights the state carries
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    rng: np.random.Generator
    key: str
    title: str

    def run(self, train_epoch: Callable[[int, np.random.Generator], dict], validate: Callable[[], dict],
            save_best: Callable[[int, dict], None], resume: bool) -> dict:
        ctx, out = self.ctx, self.out_dir
        state_path = out / STATE_FILE
        common = dict(modules=self.modules, optimizer=self.optimizer, scheduler=self.scheduler,
                      scaler=self.scaler, rng=self.rng, run_key=self.key)
        start, best, history = 0, -1.0, []
        if state_path.exists():
            if not resume:
                raise ValueError(f"{out} already holds a run ({STATE_FILE}); pass --resume to continue it "
                                 "or choose another --out")
            restored = load_state(state_path, **common)
            start, best, history = restored["epoch"], restored["best"], restored["history"]
            if ctx.is_main:
                print(f"[{self.title}] resuming after epoch {start}/{self.epochs} (best val R@5 {best:.2f})",
                      flush=True)
        elif resume and ctx.is_main:
            print(f"[{self.title}] --resume: no {state_path}, starting from epoch 0", flush=True)
        # outer bar: one tick per epoch, showing the last loss and validation recall
        bar = progress(range(start, self.epochs), initial=start, total=self.epochs, desc=self.title, unit="epoch",
                       disable=not ctx.is_main)
        for epoch in bar:
            stats = train_epoch(epoch, self.rng)
            val = validate()
            record = {"epoch": epoch + 1, **stats, **{f"val_{k}": v for k, v in val.items()}}
            history.append(record)
            improved = val["R@5"] > best
            if improved:
                best = val["R@5"]
            bar.set_postfix({"loss": f"{stats['loss']:.4f}", "val R@1": f"{val['R@1']:.1f}",
                             "val R@5": f"{val['R@5']:.1f}", "best R@5": f"{best:.1f}"})
            if ctx.is_main:
                if improved:
                    save_best(epoch + 1, val)
                save_state(state_path, epoch=epoch + 1, best=best, history=history, **common)
                atomic_write_text(out / HISTORY_FILE, json.dumps(history, indent=1))
                plot_curve(history, out / CURVE_FILE, self.title)
                tqdm.write(f"[{self.title}] epoch {epoch + 1}/{self.epochs} loss {stats['loss']:.4f} "
                      f"val R@1/5/10 {'/'.join(f'{val[k]:.1f}' for k in ('R@1', 'R@5', 'R@10') if k in val)}"
                      f"{' *best*' if improved else ''} ({stats['seconds']:.0f} s, "
                      f"{stats['images_per_s']:.0f} img/s)")
            ctx.barrier()
        if ctx.enabled:  # prove the replicas stayed identical (and that every rank took part)
            reports = distributed.gather_sync_report(ctx, self.modules, {"epochs_run": len(history) - start})
            if ctx.is_main:
                atomic_write_text(out / DDP_FILE, json.dumps({"world_size": ctx.world_size, "ranks": reports}, indent=1))
        return {"best_val_R@5": best, "epochs": len(history)}


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in [k for k in history[0] if k in ("loss", "triplet", "kd")]:
        ax1.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("training loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for n in [n for n in (1, 5, 10) if f"val_R@{n}" in history[0]]:
        ax2.plot(epochs, [h[f"val_R@{n}"] for h in history], marker="o", label=f"val R@{n}")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("recall (%)"), ax2.legend(), ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
