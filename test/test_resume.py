"""Kill a real training process with SIGKILL after its first epoch, resume it, and check the
result is bit-for-bit the run that was never interrupted (same seed, same thread count).

Why bitwise equality is possible here: the state file carries weights, AdamW moments,
the cosine schedule position, the epoch counter and every RNG the loop draws from
(torch, and the numpy Generator used for shuffling and negative mining); batches are
built in the main process (no loader workers); CPU kernels with a fixed thread count
are deterministic. The resumed run recomputes the mining cache from the restored
weights exactly as the uninterrupted run does at each epoch start.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from structvpr_core.train.config import load_experiment
from structvpr_core.train.stage1 import run_stage1

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
out_dir: {out}
seed: 3
device: cpu
data: {{train_places: 24, val_places: 8}}
stage1_rgb:
  model: {{branch: rgb, input_size: [64, 32]}}
  optim: {{epochs: 3, batch_size: 4}}
  mining: {{pool_size: 4, refresh_every: 2}}
eval_batch_size: 32
"""


@pytest.fixture(autouse=True)
def one_thread():
    # same thread count as the killed subprocess (--threads 1): bitwise-equal CPU kernels,
    # and ~6x faster than two OpenMP threads on a loaded 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, shared):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(CONFIG.format(out=tmp_path / "{seed}"))
    env = {**os.environ, "STRUCTVPR_SHARED": str(shared), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "structvpr_core.train.cli", "stage1-rgb", "--config", str(cfg_path),
           "--threads", "1", "--out", str(tmp_path / "killed")]
    state_file = tmp_path / "killed" / "stage1-rgb" / "state.pt"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not state_file.exists():
        assert proc.poll() is None, f"training exited before writing its state: {proc.stdout.read().decode()}"
        assert time.monotonic() < deadline, "no state file after 60 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_epoch = _state(state_file)["epoch"]
    assert saved_epoch < 3, "the run finished before it could be killed; make it longer"

    # resume in this process (one thread, like the killed one)
    cfg = load_experiment(cfg_path, out=str(tmp_path / "killed"))
    resumed = run_stage1(cfg, "rgb", resume=True)
    reference = run_stage1(load_experiment(cfg_path, out=str(tmp_path / "straight")), "rgb")
    assert resumed["epochs"] == reference["epochs"] == 3

    a = _state(tmp_path / "killed" / "stage1-rgb" / "state.pt")
    b = _state(tmp_path / "straight" / "stage1-rgb" / "state.pt")
    assert a["epoch"] == b["epoch"] == 3
    # the resumed run continued from the saved epoch: epochs 1..saved come from the killed
    # process, the rest from the resumed one, and the history has no gaps or repeats
    assert [h["epoch"] for h in a["history"]] == [1, 2, 3]
    for key in b["modules"]["model"]:
        assert torch.equal(a["modules"]["model"][key], b["modules"]["model"][key]), key
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["loss"] == hb["loss"] and ha["val_R@5"] == hb["val_R@5"]
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert a["numpy_rng"] == b["numpy_rng"]


def test_existing_run_needs_resume_flag(tmp_path, shared):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(CONFIG.format(out=tmp_path / "run").replace("epochs: 3", "epochs: 1"))
    run_stage1(load_experiment(cfg_path), "rgb")
    with pytest.raises(ValueError, match="--resume"):
        run_stage1(load_experiment(cfg_path), "rgb")
    # a state written by another configuration is refused, not silently mixed in
    cfg_path.write_text(CONFIG.format(out=tmp_path / "run").replace("epochs: 3", "epochs: 2"))
    with pytest.raises(ValueError, match="different configuration"):
        run_stage1(load_experiment(cfg_path), "rgb", resume=True)
