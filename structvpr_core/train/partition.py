"""Group partition (§3.4) and distillation weights (Eq. 4, Eq. 7, constants).

``x`` = 1-based rank of the positive p in q's retrieval list by the SEG branch
(the teacher), ``y`` = the same by the RGB branch (the student-to-be).

GP-D: D1: x <= Nt < y,  D2: x <= y <= Nt,  D3: y < x <= Nt,  D4: x > Nt.
GP-S: S1: x <= Nt,      S2: x > Nt        (teacher only).
GP-R: R1: y <= Nt,      R2: y > Nt        (student only).

phi (Eq. 4): D1: 1 + (min(Nm, y) - x) / (4 ln(1+x));  D2: 1 + (y - x) / (5 ln(1+x));
             D3: 1 + (y - x) / (4 ln(1+x));           D4: 0.
phi' (Eq. 7, GP-S): S1: 1 + 1 / (4 ln(1+x)); S2: 0.

Range of phi in D3 (y < x <= Nt, y >= 1): phi = 1 - (x - y) / (4 ln(1+x)) is smallest
at y = 1, x = Nt. (x-1)/(4 ln(1+x)) grows with x: 0.228 at x=2, 0.938 at x=10
(phi_min = 0.0617 for the paper's Nt = 10), 1.006 at x=11. So phi stays positive for
Nt <= 10 but goes negative from Nt = 11 on (x=11, y=1: phi = -0.006). The paper requires
"phi cannot be negative" (supp. §4), so negative values are clipped to 0 and counted.
D1 (y > Nt >= x, Nm >= Nt) and D2 (y >= x) give phi >= 1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.runtime.network import pick_device
from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.train.config import ExperimentConfig

TABLE_FILE = "partition.csv"

GROUP_NAMES = {"gp-d": ("D1", "D2", "D3", "D4"), "gp-s": ("S1", "S2"), "gp-r": ("R1", "R2")}


def _check_ranks(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    if x.size and (x.min() < 1 or y.min() < 1):
        raise ValueError("ranks are 1-based: every x and y must be >= 1")
    return x.astype(np.int64), y.astype(np.int64)


def group_partition(x, y, nt: int = 10, grouping: str = "gp-d") -> np.ndarray:
    """0-based group index per pair into ``GROUP_NAMES[grouping]``."""
    x, y = _check_ranks(x, y)
    if grouping == "gp-d":
        return np.select([x > nt, y > nt, x <= y], [3, 0, 1], default=2)
    if grouping == "gp-s":
        return (x > nt).astype(np.int64)
    if grouping == "gp-r":
        return (y > nt).astype(np.int64)
    raise ValueError(f"unknown grouping {grouping!r}; known: {sorted(GROUP_NAMES)}")


def weight_fn(x, y, nt: int = 10, nm: int = 20, grouping: str = "gp-d", weights: str = "phi",
              constant: list[float] | None = None) -> tuple[np.ndarray, int]:
    """Distillation weight per (q, p) pair; returns ``(phi, number of negative values clipped to 0)``."""
    x, y = _check_ranks(x, y)
    if weights == "none":
        return np.zeros(x.shape), 0
    if weights == "all":
        return np.ones(x.shape), 0
    group = group_partition(x, y, nt, grouping)
    if weights == "constant":
        table = np.asarray(constant, np.float64)
        if table.shape != (len(GROUP_NAMES[grouping]),):
            raise ValueError(f"{grouping} needs {len(GROUP_NAMES[grouping])} constant weights, got {constant}")
        return table[group], 0
    if weights != "phi":
        raise ValueError(f"unknown weights {weights!r}; known: phi, constant, all, none")
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    log = np.log1p(xf)  # x >= 1, so ln(1+x) >= ln 2 > 0
    if grouping == "gp-d":
        phi = np.select(
            [group == 0, group == 1, group == 2],
            [1 + (np.minimum(nm, yf) - xf) / (4 * log), 1 + (yf - xf) / (5 * log), 1 + (yf - xf) / (4 * log)],
            default=0.0,
        )
    elif grouping == "gp-s":
        phi = np.where(group == 0, 1 + 1 / (4 * log), 0.0)
    else:
        raise ValueError("phi is defined for gp-d (Eq. 4) and gp-s (Eq. 7) only")
    negative = int((phi < 0).sum())
    return np.maximum(phi, 0.0), negative


def group_ratios(x, y, nt: int = 10) -> dict[str, float]:
    """Fraction of pairs in every group of every grouping (D1..D4, S1, S2, R1, R2)."""
    out = {}
    for grouping, names in GROUP_NAMES.items():
        group = group_partition(x, y, nt, grouping)
        for i, name in enumerate(names):
            out[name] = float((group == i).mean()) if group.size else 0.0
    return out


# ---------------------------------------------------------------- ranks and the partition step


def positive_ranks(q_desc: np.ndarray, db_desc: np.ndarray, pairs_q: np.ndarray, pairs_p: np.ndarray,
                   positives: list[np.ndarray]) -> np.ndarray:
    """1-based rank of database item p in query q's list (cosine similarity, best first).

    Other true matches of q (its soft positives, e.g. the neighbouring Nordland frames)
    are not counted as ranked above p: they are correct answers, not competitors.
    Ties count in p's favour (only strictly more similar items push it down).
    """
    ranks = np.empty(len(pairs_q), np.int64)
    for i, (q, p) in enumerate(zip(pairs_q, pairs_p)):
        sims = db_desc @ q_desc[q]
        above = sims > sims[p]
        above[positives[q]] = False
        ranks[i] = 1 + int(above.sum())
    return ranks


def read_table(path: Path) -> dict[str, np.ndarray]:
    """The partition table: int columns q, p, x, y (group and weight are recomputed by stage II)."""
    if not path.is_file():
        raise FileNotFoundError(f"partition table not found: {path} (run `structvpr train partition` first)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"q", "p", "x", "y"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: the partition table is empty")
    try:
        return {c: np.asarray([int(r[c]) for r in rows], np.int64) for c in ("q", "p", "x", "y")}
    except ValueError as e:
        raise ValueError(f"{path}: non-integer q/p/x/y value ({e})") from None


def run_partition(cfg: ExperimentConfig) -> dict:
    """Rank every training (q, p) with both frozen stage I branches, write table + summary + plot."""
    from structvpr_core.train.data import load_split, make_banks
    from structvpr_core.train.evaluation import encode_bank
    from structvpr_core.train.stage1 import step_dir

    device = pick_device(cfg.device)
    out = cfg.out() / "partition"
    train = load_split(cfg.data, "train")
    pairs_q = np.asarray([q for q, hp in enumerate(train.hard_positives) if hp.size], np.int64)
    pairs_p = np.asarray([train.hard_positives[q][0] for q in pairs_q], np.int64)
    ranks, hashes = {}, {}
    for branch in ("seg", "rgb"):
        ckpt = step_dir(cfg, branch) / "best.pt"
        model, payload = load_checkpoint(ckpt, expect_branch=branch)
        model = model.to(device, memory_format=torch.channels_last)
        hashes[branch] = payload["sha256"]
        banks = make_banks(train, model.config, cfg.labels_root() if branch == "seg" else None)
        q_desc = encode_bank(model, banks.queries, device, cfg.eval_batch_size)
        db_desc = encode_bank(model, banks.database, device, cfg.eval_batch_size)
        ranks[branch] = positive_ranks(q_desc, db_desc, pairs_q, pairs_p, train.positives)
    x, y = ranks["seg"], ranks["rgb"]
    nt, nm = cfg.partition.nt, cfg.partition.nm
    group = group_partition(x, y, nt, "gp-d")
    phi, clipped = weight_fn(x, y, nt, nm, "gp-d", "phi")
    names = GROUP_NAMES["gp-d"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["q", "p", "x", "y", "group", "weight", "q_image", "p_image"])
            for i in range(len(x)):
                w.writerow([pairs_q[i], pairs_p[i], x[i], y[i], names[group[i]], f"{phi[i]:.6f}",
                            train.queries[pairs_q[i]].name, train.database[pairs_p[i]].name])

    atomic_write(out / TABLE_FILE, write)
    ratios = group_ratios(x, y, nt)
    summary = {
        "pairs": int(len(x)), "nt": nt, "nm": nm, "ratios": ratios, "phi_clipped_to_zero": clipped,
        "phi_mean_by_group": {names[g]: float(phi[group == g].mean()) if (group == g).any() else None
                              for g in range(4)},
        "seg_recall_at_nt": float((x <= nt).mean()), "rgb_recall_at_nt": float((y <= nt).mean()),
        "median_rank": {"seg": float(np.median(x)), "rgb": float(np.median(y))},
        "checkpoints_sha256": hashes, "split": train.name, "seed": cfg.seed,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    plot_ratios(ratios, out / "ratios.png", f"group ratios, {train.name}, Nt={nt}")
    print(f"[partition] {len(x)} pairs -> {out / TABLE_FILE}")
    print("[partition] group ratios: " + "  ".join(f"{k} {100 * v:.2f}%" for k, v in ratios.items()))
    print("[partition] paper (MSLS, Table 5): " + "  ".join(f"{k} {v:.2f}%" for k, v in PAPER_RATIOS.items()))
    return summary


# Table 5 "sample ratio" column of the paper (MSLS training set, Nt = 10).
PAPER_RATIOS = {"D1": 4.11, "D2": 50.67, "D3": 14.77, "D4": 30.45, "S1": 69.55, "S2": 30.45,
                "R1": 73.24, "R2": 26.76}


def plot_ratios(ratios: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(PAPER_RATIOS)
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(pos - 0.2, [100 * ratios[n] for n in names], 0.4, label="ours")
    ax.bar(pos + 0.2, [PAPER_RATIOS[n] for n in names], 0.4, label="paper (MSLS)")
    ax.set_xticks(pos, names), ax.set_ylabel("% of training pairs"), ax.set_title(title), ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
