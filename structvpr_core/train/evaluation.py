"""Descriptors of an input bank and Recall@N of a split (val for selection, test for reporting)."""

from __future__ import annotations

import numpy as np
import torch

from structvpr_core.data.datasets import PlaceSet
from structvpr_core.evaluation.metrics import recall_at_n
from structvpr_core.train.data import InputBank, SplitBanks, to_device

RECALL_NS = (1, 5, 10, 20)


@torch.no_grad()
def encode_bank(model: torch.nn.Module, bank: InputBank, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """(N, dim) float32 L2-normalised descriptors; the model is put back in its previous mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(bank), batch_size):
        x = to_device(bank.batch(np.arange(start, min(start + batch_size, len(bank)))), device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def ranked_lists(q_desc: np.ndarray, db_desc: np.ndarray, k: int) -> np.ndarray:
    """Top-k database indices per query by cosine similarity (exact, ties broken by index)."""
    sims = q_desc @ db_desc.T
    k = min(k, db_desc.shape[0])
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def split_recalls(model: torch.nn.Module, banks: SplitBanks, device: torch.device, batch_size: int = 256) -> dict:
    """R@N with soft ground truth (``R@N``) and hard, exact-frame ground truth (``hard_R@N``), in %."""
    return descriptor_recalls(encode_bank(model, banks.queries, device, batch_size),
                              encode_bank(model, banks.database, device, batch_size), banks.place_set)


def descriptor_recalls(q: np.ndarray, db: np.ndarray, place_set: PlaceSet) -> dict:
    """``split_recalls`` for descriptors already computed (rows in the place set's order)."""
    ranked = ranked_lists(q, db, max(RECALL_NS))
    ns = [n for n in RECALL_NS if n <= ranked.shape[1]]
    soft = recall_at_n(ranked, place_set.positives, ns)
    hard = recall_at_n(ranked, place_set.hard_positives, ns)
    out = {f"R@{n}": 100 * r for n, r in soft.recalls.items()}
    out.update({f"hard_R@{n}": 100 * r for n, r in hard.recalls.items()})
    out["num_queries"] = soft.num_evaluated
    return out
