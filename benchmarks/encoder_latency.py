"""Encoder latency: StructVPR RGB student vs ResNet50 / VGG16 trunks, same input, same run.

Batch 1, 640x480 (the paper's resolution) by default; eager (NCHW) vs channels_last.
Median ms/frame after warm-up, variants timed round-robin. Ratios are the numbers to quote (machines are noisy).

    .venv/bin/python benchmarks/encoder_latency.py --out benchmarks/results/encoder_latency_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

from structvpr_core.cli import parse_size
from structvpr_core.runtime.encoder import pick_device
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.progress import progress


def trunks(size):
    yield "structvpr-mobilenetv2-mc (448-d)", RGBBranch(ModelConfig("rgb", size))
    yield "resnet50-trunk", torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2])
    yield "vgg16-trunk", torchvision.models.vgg16(weights=None).features


def run_once(model, x, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="WxH input")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/encoder_latency_cpu.json")
    args = ap.parse_args()
    w, h = parse_size(args.size)
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variants = []  # (model name, layout, module, input)
    for name, model in trunks((w, h)):
        model = model.eval().to(device)
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            # a separate copy per layout: .to(memory_format) converts weights in place
            m = copy.deepcopy(model).to(memory_format=fmt)
            variants.append((name, layout, m, torch.randn(1, 3, h, w, device=device).to(memory_format=fmt)))
    # Round-robin: every round times each variant once, so load changes on a shared
    # machine hit all variants alike and the ratios stay meaningful.
    times = {(n, lay): [] for n, lay, _, _ in variants}
    with torch.inference_mode():
        for r in progress(range(args.warmup + args.iters), desc="rounds"):
            for name, layout, m, x in variants:
                t = run_once(m, x, device)
                if r >= args.warmup:
                    times[(name, layout)].append(t)
    rows = [
        {"model": n, "layout": lay, "median_ms": statistics.median(t), "min_ms": min(t), "iters": len(t)}
        for (n, lay), t in times.items()
    ]
    ref = next(r["median_ms"] for r in rows if r["model"].startswith("structvpr") and r["layout"] == "channels_last")
    for r in rows:
        r["ratio_vs_structvpr_channels_last"] = r["median_ms"] / ref
    result = {
        "benchmark": "encoder_latency",
        "input": f"{w}x{h}",
        "batch": 1,
        "device": str(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "loadavg_1m_at_end": os.getloadavg()[0],  # other work on the machine inflates absolute ms
        "rows": rows,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))
    print(f"\n{'model':36s}{'layout':16s}{'median ms':>10s}{'x ours':>8s}")
    for r in rows:
        print(f"{r['model']:36s}{r['layout']:16s}{r['median_ms']:10.1f}{r['ratio_vs_structvpr_channels_last']:8.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
