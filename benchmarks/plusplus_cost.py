"""Cost of StructVPR++ vs StructVPR at deployment: encoder ms per frame and bytes per map entry.

Both students are measured in the same run: encoder latency round-robin (batch 1, the
encoder's own preprocessing included, median after warm-up), and bytes per map entry as
the growth of a saved flat-index map database per added keyframe, (size(2N) - size(N)) / N,
with real nordland64 test frames encoded by each model (no poses, no local features).
Without checkpoints, random-init models of the same architectures are timed (same cost).

    .venv/bin/python benchmarks/plusplus_cost.py --threads 1 \
        --structvpr runs/plusplus_smoke/structvpr/seed0/stage2-gpd_phi/best.pt \
        --plusplus runs/plusplus_smoke/plusplus/seed0/stage2-plusplus_gpd_phi/best.pt
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from structvpr_core.arguments import parse_size
from structvpr_core.data.datasets import nordland64
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.network import NetworkEncoder
from structvpr_core.train.plusplus import PlusPlusConfig, label_aware_student


def models(args) -> dict[str, torch.nn.Module]:
    if args.structvpr and args.plusplus:
        return {name: load_checkpoint(path, expect_branch="rgb")[0]
                for name, path in (("StructVPR", args.structvpr), ("StructVPR++", args.plusplus))}
    torch.manual_seed(0)
    plain = RGBBranch(ModelConfig("rgb", (64, 32)))
    return {"StructVPR": plain, "StructVPR++": label_aware_student(plain, LabelFeatureConfig(), PlusPlusConfig())}


def map_bytes_per_entry(encoder, frames: list[np.ndarray], name: str, tmp: Path) -> float:
    desc = encoder.encode(frames)
    sizes = []
    for n in (len(frames) // 2, len(frames)):
        db = MapDatabase(ModelIdentity(name, encoder.dim))
        db.add_batch(desc[:n], np.arange(n), [f"f{i}" for i in range(n)])
        out = db.save(tmp / f"{name}-{n}")
        sizes.append(sum(f.stat().st_size for f in out.iterdir()))
    return (sizes[1] - sizes[0]) / (len(frames) - len(frames) // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--structvpr", help="StructVPR student checkpoint (with --plusplus)")
    ap.add_argument("--plusplus", help="StructVPR++ student checkpoint (with --structvpr)")
    ap.add_argument("--sizes", nargs="+", default=["64x32", "640x480"], help="encoder input sizes WxH")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--entries", type=int, default=400, help="keyframes in the larger map (real test frames)")
    ap.add_argument("--out", default="benchmarks/results/plusplus_cost_cpu.json")
    args = ap.parse_args()
    if bool(args.structvpr) != bool(args.plusplus):
        ap.error("give both --structvpr and --plusplus, or neither (random-init architectures)")
    torch.set_num_threads(args.threads)
    nets = models(args)
    test = nordland64(None, "test")
    frames = [read_rgb(p) for p in test.database[: args.entries]]

    rows = []
    for size in [parse_size(s) for s in args.sizes]:
        # torch fp32: the same path for both nets, as before the inference paths existed
        encoders = {name: NetworkEncoder(net, name, "cpu", size, "torch", "fp32") for name, net in nets.items()}
        times: dict[str, list[float]] = {name: [] for name in encoders}
        for i in range(args.warmup + args.iters):  # round-robin: load changes hit both alike
            for name, enc in encoders.items():
                t0 = time.perf_counter()
                enc.encode([frames[i % len(frames)]])
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000)
        for name, enc in encoders.items():
            rows.append({"model": name, "input": f"{size[0]}x{size[1]}", "dim": enc.dim,
                         "params": sum(p.numel() for p in nets[name].parameters()),
                         "encoder_ms_median": statistics.median(times[name]),
                         "encoder_ms_p90": float(np.percentile(times[name], 90))})
    with tempfile.TemporaryDirectory() as tmp:
        per_entry = {name: map_bytes_per_entry(NetworkEncoder(net, name, "cpu", None, "torch", "fp32"), frames, name, Path(tmp))
                     for name, net in nets.items()}
    for row in rows:
        row["map_bytes_per_entry"] = per_entry[row["model"]]
    base = {r["input"]: r for r in rows if r["model"] == "StructVPR"}
    for row in rows:
        b = base[row["input"]]
        row["ms_ratio_vs_structvpr"] = row["encoder_ms_median"] / b["encoder_ms_median"]
        row["bytes_ratio_vs_structvpr"] = row["map_bytes_per_entry"] / b["map_bytes_per_entry"]

    result = {"threads": args.threads, "iters": args.iters, "entries": args.entries,
              "checkpoints": {"StructVPR": args.structvpr, "StructVPR++": args.plusplus},
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"{'model':<12} {'input':>8} {'dim':>5} {'params':>9} {'ms med':>8} {'ms p90':>8} {'B/entry':>8} "
          f"{'ms ratio':>8} {'B ratio':>8}")
    for r in rows:
        print(f"{r['model']:<12} {r['input']:>8} {r['dim']:>5} {r['params']:>9} {r['encoder_ms_median']:>8.2f} "
              f"{r['encoder_ms_p90']:>8.2f} {r['map_bytes_per_entry']:>8.0f} {r['ms_ratio_vs_structvpr']:>8.2f} "
              f"{r['bytes_ratio_vs_structvpr']:>8.2f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
