"""Two CPU processes under torchrun (gloo on loopback) train one tiny stage I run with DDP."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from structvpr_core.models.checkpoint import state_dict_sha256

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
out_dir: {out}
seed: 1
device: cpu
data: {{train_places: 24, val_places: 8}}
stage1_rgb:
  model: {{branch: rgb, input_size: [64, 32]}}
  optim: {{epochs: 1, batch_size: 4}}
  mining: {{pool_size: 4}}
eval_batch_size: 32
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_gloo_run_keeps_replicas_identical(tmp_path, shared):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run"))
    env = {**os.environ, "STRUCTVPR_SHARED": str(shared), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "structvpr_core.train.cli", "stage1-rgb", "--config", str(cfg), "--threads", "1"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = tmp_path / "run" / "stage1-rgb"
    report = json.loads((out / "ddp.json").read_text())
    ranks = report["ranks"]
    assert report["world_size"] == 2 and sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["pid"] != ranks[1]["pid"]  # two real processes
    assert all(r["backend"] == "gloo" and r["epochs_run"] == 1 for r in ranks)
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    # ... and the gathered hash is the hash of the weights actually saved by rank 0
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    assert state_dict_sha256(state["modules"]["model"]) == ranks[0]["sha256"]["model"]
    # 24 pairs / (2 ranks x 4) = 3 steps of a global batch of 8
    assert state["optimizer"]["state"][0]["step"].item() == 3
