"""Resumable training state: one file per run, rewritten atomically after every epoch.

Holds everything the next epoch depends on — module weights, optimizer, LR scheduler,
AMP scaler, epoch counter, best validation score, history, and the RNG states
(torch CPU/CUDA and the numpy Generator used for shuffling and mining) — so a run
killed at any moment resumes from its last finished epoch and, on the same machine
and thread count, continues bit for bit as if it had never stopped.
Saved with ``torch.save`` of plain containers; loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from structvpr_core.io_utils import atomic_write_bytes

STATE_FORMAT = "structvpr-train-state/1"


def save_state(path: Path, *, modules: dict[str, torch.nn.Module], optimizer, scheduler, scaler,
               epoch: int, best: float, history: list[dict], rng: np.random.Generator, run_key: str) -> None:
    payload = {
        "format": STATE_FORMAT,
        "run_key": run_key,
        "epoch": epoch,  # number of finished epochs
        "best": best,
        "history": history,
        "modules": {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": rng.bit_generator.state,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, *, modules: dict[str, torch.nn.Module], optimizer, scheduler, scaler,
               rng: np.random.Generator, run_key: str) -> dict:
    """Restore everything in place; returns ``{"epoch", "best", "history"}``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: unreadable training state ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a StructVPR training state")
    if payload["run_key"] != run_key:
        raise ValueError(f"{path}: was written by a different configuration ({payload['run_key']}); "
                         f"this run is {run_key}. Use a fresh --out directory or the original config.")
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    rng.bit_generator.state = payload["numpy_rng"]
    return {"epoch": payload["epoch"], "best": payload["best"], "history": payload["history"]}
