"""The whole training pipeline on a handful of real nordland64 images, every step a real run:
`structvpr segment` label cache -> stage I RGB -> stage I seg -> partition -> stage II -> test."""

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.data.datasets import NORDLAND64_SPLITS
from structvpr_core.train.cli import run_test
from structvpr_core.train.config import ConfigError, WhitenConfig, load_experiment
from structvpr_core.train.partition import run_partition
from structvpr_core.train.stage1 import run_stage1
from structvpr_core.train.stage2 import run_stage2
from structvpr_core.train.whiten import run_whiten

REPO = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL, N_TEST = 24, 8, 8

CONFIG = """
out_dir: {out}
seed: 0
device: cpu
data: {{root: {root}, labels: {labels}, train_places: {n_train}, val_places: {n_val}}}
stage1_rgb:
  model: {{branch: rgb, input_size: [64, 32]}}
  optim: {{epochs: 1, batch_size: 4}}
  mining: {{pool_size: 4}}
stage1_seg:
  model: {{branch: seg, input_size: [64, 32], slme: {{label_set: cityscapes}}}}
  optim: {{epochs: 1, batch_size: 4}}
  mining: {{pool_size: 4}}
partition: {{nt: 3, nm: 6}}
stage2:
  name: gpd_phi
  kd: {{grouping: gp-d, weights: phi}}
  student_init: fresh
  optim: {{epochs: 1, batch_size: 4, lr: 1.0e-4}}
  mining: {{pool_size: 4}}
eval_batch_size: 32
"""



@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared):
    """A few frames of each split (both seasons) copied to a temp folder, segmented for real."""
    tmp = tmp_path_factory.mktemp("tiny")
    src = shared / "data" / "nordland64"
    for season in ("summer", "winter"):
        for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
            lo = NORDLAND64_SPLITS[split][0]
            for frame in range(lo, lo + 10 * n, 10):
                (tmp / "data" / season).mkdir(parents=True, exist_ok=True)
                shutil.copy(src / season / f"images-{frame:05d}.png", tmp / "data" / season)
    # native 64x32 inference: fast enough for a smoke test (labels are mostly void at this size)
    weights = shared / "models" / "espnet" / "espnet_p2_q8_cityscapes.pth"
    done = subprocess.run([sys.executable, "-m", "structvpr_core.cli", "segment", "--weights", str(weights),
                           "--size", "64x32", "--input", str(tmp / "data"), "--output", str(tmp / "labels")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STRUCTVPR_SHARED": str(shared), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = tmp / "c.yaml"
    cfg.write_text(CONFIG.format(out=tmp / "run", root=tmp / "data", labels=tmp / "labels",
                                 n_train=N_TRAIN, n_val=N_VAL))
    return load_experiment(cfg)


def test_stage1_rgb(tiny):
    result = run_stage1(tiny, "rgb")
    out = tiny.out() / "stage1-rgb"
    model, payload = load_checkpoint(out / "best.pt", expect_branch="rgb", expect_dim=448)
    assert payload["meta"]["epoch"] == 1 and payload["meta"]["val"]["R@5"] == result["best_val_R@5"]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["loss"] > 0 and np.isfinite(history[0]["loss"])
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage1_seg_partition_stage2_test(tiny):
    run_stage1(tiny, "seg")
    load_checkpoint(tiny.out() / "stage1-seg" / "best.pt", expect_branch="seg", expect_dim=480)
    summary = run_partition(tiny)
    with open(tiny.out() / "partition" / "partition.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["pairs"] == N_TRAIN
    assert {"q", "p", "x", "y", "group", "weight"} <= set(rows[0])
    assert sum(summary["ratios"][g] for g in ("D1", "D2", "D3", "D4")) == pytest.approx(1.0)
    for r in rows:  # the table is consistent with its own ranks
        x, y = int(r["x"]), int(r["y"])
        assert 1 <= x <= N_TRAIN and 1 <= y <= N_TRAIN
        assert r["group"] == ("D4" if x > 3 else "D1" if y > 3 else "D2" if x <= y else "D3")

    run_stage2(tiny)
    out = tiny.out() / "stage2-gpd_phi"
    student, payload = load_checkpoint(out / "best.pt", expect_branch="rgb", expect_dim=448)
    history = json.loads((out / "history.json").read_text())
    assert history[0]["kd"] >= 0 and history[0]["triplet"] >= 0
    assert payload["meta"]["kd"]["weights"] == "phi"

    result = run_test(tiny, "stage2")
    assert result["split"].startswith("nordland64-test") and result["test"]["num_queries"] == N_TEST
    assert {"R@1", "R@5", "hard_R@1", "hard_R@5"} <= set(result["test"])

    # whiten: fitted on the 48 training descriptors, the shrink chosen on val R@1 (then R@5)
    whiten_cfg = replace(tiny, whiten=WhitenConfig(dims=[16], shrinks=[0.1, 1.0]))
    summary = run_whiten(whiten_cfg)
    record = json.loads((out.parent / "stage2-gpd_phi-whitened" / "whiten.json").read_text())
    best = max(record["candidates"], key=lambda c: (c["val"]["R@1"], c["val"]["R@5"]))
    assert len(record["candidates"]) == 2 and record["chosen"] == best and summary["dim"] == 16
    assert record["improved_on_val"] == ((best["val"]["R@1"], best["val"]["R@5"])
                                         > (record["val_unwhitened"]["R@1"], record["val_unwhitened"]["R@5"]))
    whitened, meta = load_checkpoint(summary["checkpoint"], expect_branch="rgb", expect_dim=16)
    assert meta["meta"]["whitening"]["source_sha256"] == payload["sha256"]
    assert all(torch.equal(a, b) for a, b in zip(whitened.stages.state_dict().values(),
                                                 student.stages.state_dict().values()))
    with pytest.raises(ValueError, match="cannot fit a 448-d whitening"):
        run_whiten(replace(tiny, whiten=WhitenConfig(dims=[448])))


def test_missing_labels_and_bad_config_are_clear(tiny, tmp_path):
    broken = load_experiment(Path(tiny.out()).parent / "c.yaml", out=str(tmp_path / "o"))
    broken.data.labels = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="structvpr segment"):
        run_stage1(broken, "seg")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage2: {name: x, kd: {grouping: gp-d, weights: constant, constant: [1, 0]}}\n")
    with pytest.raises(ConfigError, match="needs 4 weights"):
        load_experiment(bad)
