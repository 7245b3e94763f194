"""Encoder latency: StructVPR RGB student vs ResNet50 / VGG16 trunks, same input, same run.

Batch 1, 640x480 (the paper's resolution) by default; eager (NCHW) vs channels_last.
Median ms/frame after warm-up. Ratios are the numbers to quote (machines are noisy).

    .venv/bin/python benchmarks/encoder_latency.py --out benchmarks/results/encoder_latency_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

from structvpr_core.encoder import pick_device
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models import ModelConfig, RGBBranch


def trunks(size):
    yield "structvpr-mobilenetv2-mc (448-d)", RGBBranch(ModelConfig("rgb", size))
    yield "resnet50-trunk", torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2])
    yield "vgg16-trunk", torchvision.models.vgg16(weights=None).features


def time_model(model, x, iters, warmup, device):
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="WxH input")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/encoder_latency_cpu.json")
    args = ap.parse_args()
    w, h = map(int, args.size.lower().split("x"))
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, model in trunks((w, h)):
        model = model.eval().to(device)
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            m = model.to(memory_format=fmt)
            x = torch.randn(1, 3, h, w, device=device).to(memory_format=fmt)
            iters = args.iters if "vgg" not in name else max(5, args.iters // 3)  # VGG16 is ~1 s/frame on CPU
            med, best = time_model(m, x, iters, args.warmup, device)
            rows.append({"model": name, "layout": layout, "median_ms": med, "min_ms": best, "iters": iters})
            print(f"  {name:34s} {layout:14s} median {med:8.1f} ms", flush=True)
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
        "rows": rows,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))
    print(f"\n{'model':36s}{'layout':16s}{'median ms':>10s}{'x ours':>8s}")
    for r in rows:
        print(f"{r['model']:36s}{r['layout']:16s}{r['median_ms']:10.1f}{r['ratio_vs_structvpr_channels_last']:8.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
