"""Pipeline step after training: learned PCA whitening of an RGB model's descriptor.

Input: ``<out>/stage2-<arm>/best.pt`` (``whiten.source: stage2``) or ``<out>/stage1-rgb/best.pt``.
The model's descriptors of the training split (clean images, training input size, queries
and database) fit the whitening (models/whitening.py) for every ``whiten.dims`` x
``whiten.shrinks``; the candidate with the best val R@1 (ties: val R@5) is kept. Output:
``<source folder>-whitened/best.pt`` (the same network + the whitening, so encoders, maps and
the node take it unchanged) and ``whiten.json`` with every candidate's val recall and the
unwhitened model's, so whether it helped is on record (``improved_on_val``; when False the step
says so: the unwhitened model stays the better choice). The test split is never read.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.branches import RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
from structvpr_core.models.whitening import Whitening, fit_whitening
from structvpr_core.runtime.network import pick_device
from structvpr_core.train.config import ExperimentConfig
from structvpr_core.train.data import load_split, make_banks
from structvpr_core.train.evaluation import descriptor_recalls, encode_bank
from structvpr_core.train.loop import BEST_FILE
from structvpr_core.train.stage1 import step_dir
from structvpr_core.train.stage2 import stage2_dir


def source_dir(cfg: ExperimentConfig) -> Path:
    if cfg.whiten.source == "stage2":
        if cfg.stage2 is None:
            raise ValueError("whiten.source is stage2 but the config has no stage2 section")
        return stage2_dir(cfg)
    return step_dir(cfg, "rgb")


def whitened(model: RGBBranch, whitening: Whitening) -> RGBBranch:
    """A copy of ``model`` whose descriptor goes through ``whitening`` (loaded strictly)."""
    out = RGBBranch(replace(model.config, whitening_dim=whitening.projection.shape[1]))
    out.load_state_dict({**model.state_dict(), **{f"whitening.{k}": v for k, v in whitening.state_dict().items()}})
    return out.eval()


@torch.no_grad()
def apply(whitening: Whitening, descriptors: np.ndarray) -> np.ndarray:
    return whitening(torch.from_numpy(descriptors)).numpy()


def run_whiten(cfg: ExperimentConfig) -> dict:
    src = source_dir(cfg)
    model, payload = load_checkpoint(src / BEST_FILE, expect_branch="rgb")
    if not isinstance(model, RGBBranch) or model.config.whitening_dim:
        raise ValueError(f"{src / BEST_FILE}: whitening needs a plain, not yet whitened RGB model "
                         "(StructVPR++ label models and whitened ones are refused)")
    device = pick_device(cfg.device)
    model = model.to(device).eval()
    train = make_banks(load_split(cfg.data, "train"), model.config, None)
    val = make_banks(load_split(cfg.data, "val"), model.config, None)
    descriptors = np.concatenate([encode_bank(model, train.database, device, cfg.eval_batch_size),
                                  encode_bank(model, train.queries, device, cfg.eval_batch_size)])
    # the whitening is a function of the descriptor: the network runs over val once, every
    # candidate whitens those descriptors
    val_q = encode_bank(model, val.queries, device, cfg.eval_batch_size)
    val_db = encode_bank(model, val.database, device, cfg.eval_batch_size)
    unwhitened = descriptor_recalls(val_q, val_db, val.place_set)
    print(f"[whiten] {src / BEST_FILE}: {len(descriptors)} training descriptors; "
          f"val R@1 / R@5 unwhitened {unwhitened['R@1']:.1f} / {unwhitened['R@5']:.1f}", flush=True)
    candidates, best, best_whitening = [], None, None
    for dim in cfg.whiten.dims or [model.config.mc_dim]:
        for shrink in cfg.whiten.shrinks:
            whitening = fit_whitening(descriptors, dim, shrink)
            recalls = descriptor_recalls(apply(whitening, val_q), apply(whitening, val_db), val.place_set)
            candidates.append({"dim": dim, "shrink": shrink, "val": recalls})
            print(f"[whiten] dim {dim} shrink {shrink}: val R@1 / R@5 {recalls['R@1']:.1f} / {recalls['R@5']:.1f}",
                  flush=True)
            if best is None or (recalls["R@1"], recalls["R@5"]) > (best["val"]["R@1"], best["val"]["R@5"]):
                best, best_whitening = candidates[-1], whitening
    out = src.parent / f"{src.name}-whitened"
    meta = {**(payload.get("meta") or {}), "step": f"{src.name}-whitened", "val": best["val"],
            "whitening": {"dim": best["dim"], "shrink": best["shrink"], "fitted_on": train.place_set.name,
                          "num_descriptors": len(descriptors), "source_sha256": payload["sha256"]}}
    save_checkpoint(out / BEST_FILE, whitened(model.cpu(), best_whitening), meta=meta)
    improved = (best["val"]["R@1"], best["val"]["R@5"]) > (unwhitened["R@1"], unwhitened["R@5"])
    result = {"source": str(src / BEST_FILE), "checkpoint": str(out / BEST_FILE), "chosen": best,
              "val_unwhitened": unwhitened, "improved_on_val": improved, "candidates": candidates}
    atomic_write_text(out / "whiten.json", json.dumps(result, indent=1))
    print(f"[whiten] kept dim {best['dim']} shrink {best['shrink']}: val R@1 {unwhitened['R@1']:.1f} -> "
          f"{best['val']['R@1']:.1f}, R@5 {unwhitened['R@5']:.1f} -> {best['val']['R@5']:.1f}; {out / BEST_FILE}")
    if not improved:
        print(f"[whiten] warning: no whitening beat the unwhitened model on val; {src / BEST_FILE} stays the "
              "better choice", flush=True)
    return {"checkpoint": str(out / BEST_FILE), "dim": best["dim"], "shrink": best["shrink"],
            "val": best["val"], "val_unwhitened": unwhitened, "improved_on_val": improved}
