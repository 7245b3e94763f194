"""Training throughput (images/s) of stage I RGB, stage I seg and stage II on this machine.

One "step" = forward + backward + AdamW update of a triplet batch (3 x batch images),
exactly the computation of ``TripletEpoch``; "encode" = eval-mode forward (the mining
cache and validation). Inputs are real: nordland64 images for RGB, real CamVid
ground-truth label maps (SLME-encoded) for the seg branch.

  python benchmarks/train_throughput.py --threads 1 --sizes 64x32 128x64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from structvpr_core.arguments import parse_size
from structvpr_core.data.datasets import nordland64
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.branches import ModelConfig, RGBBranch, SegBranch, Transform, triplet_loss
from structvpr_core.paths import shared_dir
from structvpr_core.segmentation.slme import SLMEConfig
from structvpr_core.train.data import first_places, label_bank, rgb_bank
from structvpr_core.train.stage2 import Distiller


def _timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench(size: tuple[int, int], batch: int, warmup: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    ps = first_places(nordland64(None, "train"), 3 * batch)
    rgb = rgb_bank(ps.database, size).batch(np.arange(3 * batch)).contiguous(memory_format=torch.channels_last)
    camvid = shared_dir() / "data" / "camvid_sample" / "labels"
    label_paths = sorted(camvid.glob("*.png"))
    slme = SLMEConfig(label_set="camvid")
    seg = label_bank(label_paths, camvid.parent, size, slme)  # reads <root>/labels/<stem>.png
    seg_x = seg.batch(np.arange(3 * batch) % len(seg)).contiguous(memory_format=torch.channels_last)

    rgb_net = RGBBranch(ModelConfig("rgb", size)).to(memory_format=torch.channels_last)
    seg_net = SegBranch(ModelConfig("seg", size, slme)).to(memory_format=torch.channels_last)
    teacher_desc = torch.nn.functional.normalize(torch.randn(3 * batch, seg_net.dim), dim=1)
    distiller = Distiller(RGBBranch(ModelConfig("rgb", size)), Transform(448, seg_net.dim)).to(
        memory_format=torch.channels_last)
    rows = []
    for name, net, x, kd in (("stage1-rgb", rgb_net, rgb, False), ("stage1-seg", seg_net, seg_x, False),
                             ("stage2", distiller, rgb, True)):
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)

        def step():
            net.train()
            emb = net(x)
            q, p, n = emb.split(batch)
            if kd:
                loss = triplet_loss(q[:, :448], p[:, :448], n[:, :448]) + ((emb[:, 448:] - teacher_desc) ** 2).sum(1).mean()
            else:
                loss = triplet_loss(q, p, n)
            opt.zero_grad()
            loss.backward()
            opt.step()

        @torch.no_grad()
        def encode():
            net.eval()
            net(x)

        t_step = _timed(step, warmup, repeats)
        t_enc = _timed(encode, warmup, repeats)
        rows.append({"step": name, "input_size": list(size), "batch_triplets": batch,
                     "train_images_per_s": 3 * batch / t_step, "encode_images_per_s": 3 * batch / t_enc})
    return rows


def epoch_seconds(row: dict, pairs: int = 2250, db: int = 2250, val: int = 1000) -> float:
    """One nordland64 epoch: 3 images per pair trained, cache of queries + database, validation."""
    return 3 * pairs / row["train_images_per_s"] + (pairs + db + val) / row["encode_images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=["64x32"], help="WxH input sizes")
    parser.add_argument("--batch", type=int, default=16, help="triplets per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for text in args.sizes:
        rows += bench(parse_size(text), args.batch, warmup=2, repeats=args.repeats)
    print(f"{'step':<11} {'input':>7} {'train img/s':>12} {'encode img/s':>13} {'epoch s (est.)':>15}")
    for r in rows:
        r["nordland64_epoch_s_est"] = epoch_seconds(r)
        print(f"{r['step']:<11} {'x'.join(map(str, r['input_size'])):>7} {r['train_images_per_s']:12.1f} "
              f"{r['encode_images_per_s']:13.1f} {r['nordland64_epoch_s_est']:15.0f}")
    result = {"threads": args.threads, "torch": torch.__version__, "device": "cpu", "rows": rows,
              "note": "machine shared with other jobs: numbers are a snapshot under load"}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
