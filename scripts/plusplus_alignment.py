"""How well a StructVPR++ student predicts its teacher's label descriptor on unseen frames.

For every image of a split: cos(L_hat_student(RGB), L_teacher(label map)) for the same image,
against the same for a random other image of the split (the chance level of "predicting the
labels of some nordland frame"). Run directory = a `structvpr train` out_dir of a
StructVPR++ config (stage1-seg/best.pt = teacher, stage2-<name>/best.pt = student).

    .venv/bin/python scripts/plusplus_alignment.py --config training/plusplus_smoke_plusplus.yaml --seed 0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.models.label_features import split_descriptor
from structvpr_core.train.config import load_experiment
from structvpr_core.train.data import load_split, make_banks
from structvpr_core.train.evaluation import encode_bank
from structvpr_core.train.stage1 import step_dir
from structvpr_core.train.stage2 import stage2_dir


def label_parts(model, bank) -> np.ndarray:
    desc = torch.from_numpy(encode_bank(model, bank, torch.device("cpu")))
    return split_descriptor(desc, model.global_dim)[1].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    cfg = load_experiment(args.config, seed=args.seed)
    teacher, _ = load_checkpoint(step_dir(cfg, "seg") / "best.pt", expect_branch="seg")
    student, _ = load_checkpoint(stage2_dir(cfg) / "best.pt", expect_branch="rgb")
    place_set = load_split(cfg.data, args.split)
    seg, rgb = make_banks(place_set, teacher.config, cfg.labels_root()), make_banks(place_set, student.config, None)
    rng = np.random.default_rng(0)
    result = {"config": args.config, "seed": cfg.seed, "split": place_set.name}
    for side in ("queries", "database"):
        lt, ls = label_parts(teacher, getattr(seg, side)), label_parts(student, getattr(rgb, side))
        present = np.linalg.norm(lt, axis=1) > 0  # frames where the teacher saw at least one label
        same = (lt * ls).sum(axis=1)[present]
        other = (lt[rng.permutation(len(lt))] * ls).sum(axis=1)[present]
        result[side] = {"frames": int(present.sum()), "cos_same_image": float(same.mean()),
                        "cos_random_image": float(other.mean())}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
