"""Encoder inference paths: latency, agreement with fp32 and recall, per model, in one run.

For each model (``--models``) and inference path (``--paths``), batch 1 at ``--size``:
median ms per frame (paths timed round-robin, so load changes hit all alike; ratio to
torch fp32 of the same model in the same run), descriptor cosine to torch fp32 on real
Gardens Point frames, and with ``--recall`` R@1 on real place sets (Gardens Point train,
day_left -> day_right, at ``--recall-size``; nordland64 test, winter -> summer, at 64x32).
Also times preprocessing (``to_input_tensor``) of a real frame to the input size.

Paths: torch-fp32, torch-bf16 (autocast + channels_last; CPUs with AVX512-BF16/AMX),
onnxruntime-fp32, onnxruntime-int8 (static QDQ, per-channel, calibrated on 16 real
frames; a benchmark entry, not a node path), cuda-fp16 (torch autocast on a GPU).

Models: ``student`` (the shipped nordland64 checkpoint), ``random-mobilenetv2``,
a checkpoint path, or ``package.module:factory`` (any RGB module with
``forward(x) -> (B, dim)``, built by ``factory()``).

    .venv/bin/python benchmarks/encoder_latency.py --models student --threads 1 --recall \\
        --out benchmarks/results/encoder_paths_cpu_1thread.json
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from structvpr_core.arguments import parse_size
from structvpr_core.data.datasets import gardenspoint, nordland64
from structvpr_core.evaluation.evaluate import evaluate_place_set
from structvpr_core.io_utils import atomic_write_bytes, atomic_write_text
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.paths import shared_dir
from structvpr_core.runtime.inference import (OnnxRunner, cpu_supports_bf16, export_onnx,
                                              onnxruntime_installed, openvino_installed)
from structvpr_core.runtime.network import NetworkEncoder
from structvpr_core.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_input_tensor
from structvpr_core.runtime.threads import set_compute_threads

STUDENT = "training/checkpoints/nordland64_gpd_phi_seed0_fp16.pt"
PATHS = {  # name -> (runtime, precision) for NetworkEncoder; int8 is built here
    "torch-fp32": ("torch", "fp32"),
    "torch-bf16": ("torch", "bf16"),
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "onnxruntime-int8": None,
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "cuda-fp16": ("torch", "fp16"),
}


def build_model(spec: str, size: tuple[int, int]) -> torch.nn.Module:
    if spec == "student":
        spec = STUDENT
    if spec == "random-mobilenetv2":
        torch.manual_seed(0)
        return RGBBranch(ModelConfig("rgb", size))
    if Path(spec).is_file():
        return load_checkpoint(Path(spec), expect_branch="rgb")[0]
    module, _, factory = spec.partition(":")
    if not factory:
        raise SystemExit(f"model '{spec}': not a checkpoint file, 'student', 'random-mobilenetv2' or module:factory")
    return getattr(importlib.import_module(module), factory)()


def real_frames(n: int, traversal: str = "day_left") -> list[np.ndarray]:
    folder = shared_dir() / "data/gardenspoint" / traversal
    paths = sorted(folder.glob("*.jpg"))[:: max(1, 200 // n)][:n]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


class Int8Encoder:
    """ONNX Runtime static int8 (QDQ, per-channel weights, uint8 activations), calibrated on real frames."""

    def __init__(self, model, name, size, calibration: list[np.ndarray]):
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        # the trunk's input normalisation, as NetworkEncoder feeds it
        normalisation = (getattr(model, "input_mean", IMAGENET_MEAN), getattr(model, "input_std", IMAGENET_STD))

        class Frames(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"image": to_input_tensor([f], size, *normalisation).contiguous().numpy()}
                                     for f in calibration])

            def get_next(self):
                return next(self.batches, None)

        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            atomic_write_bytes(fp32, export_onnx(model, size))
            quantize_static(str(fp32), str(int8), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
            self._run = OnnxRunner(int8.read_bytes())
        self.device, self.input_size, self.name, self.normalisation = torch.device("cpu"), size, name, normalisation
        self.dim = int(self._run(torch.zeros(1, 3, size[1], size[0])).shape[1])

    def encode(self, images):
        return self._run(to_input_tensor(images, self.input_size, *self.normalisation))


def available(path: str) -> str | None:
    """None if the path can run here, else why not."""
    if path == "cuda-fp16":
        return None if torch.cuda.is_available() else "no CUDA device"
    if path in ("torch-bf16", "openvino-bf16") and not cpu_supports_bf16():
        return "CPU without AVX512-BF16/AMX"
    if path.startswith("openvino") and not openvino_installed():
        return "openvino/onnx not installed"
    if path.startswith("onnxruntime") and not onnxruntime_installed():
        return "onnxruntime/onnx not installed"
    return None


def make_encoder(path: str, model, name: str, size, calibration):
    # each path gets its own copy: TorchRunner converts the weights to channels_last in place
    model = copy.deepcopy(model)
    if path == "onnxruntime-int8":
        return Int8Encoder(model, name, size, calibration)
    runtime, precision = PATHS[path]
    return NetworkEncoder(model, name, "cuda" if path == "cuda-fp16" else "cpu", size, runtime, precision)


def time_round_robin(encoders: dict, x: torch.Tensor, warmup: int, iters: int) -> dict[str, list[float]]:
    times = {key: [] for key in encoders}
    for r in range(warmup + iters):
        for key, enc in encoders.items():
            if enc.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc._run(x)  # the network alone; preprocessing is timed separately
            if enc.device.type == "cuda":
                torch.cuda.synchronize()
            if r >= warmup:
                times[key].append((time.perf_counter() - t0) * 1e3)
    return times


def recall_at_1(path: str, model, name: str, size, calibration) -> dict[str, float]:
    """R@1 (soft, %) on Gardens Point train (130 queries, day_left -> day_right) at ``size``
    (``--recall-size``) and nordland64 test (677 queries, winter -> summer) at 64x32."""
    sets = {f"gardenspoint-train@{size[0]}x{size[1]}": (gardenspoint(split="train"), size),
            "nordland64-test@64x32": (nordland64(split="test"), (64, 32))}
    out = {}
    for set_name, (place_set, set_size) in sets.items():
        encoder = make_encoder(path, model, name, set_size, calibration)
        out[set_name] = 100 * evaluate_place_set(encoder, place_set, (1,))["soft"]["recall@1"]
    return out


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    labels = [f"{r['model']} / {r['path']}" for r in rows]
    ax.barh(labels, [r["median_ms"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(r["median_ms"], i, f"  {r['median_ms']:.1f} ms ({r['speedup_vs_torch_fp32']:.1f}x)", va="center")
    ax.invert_yaxis()
    ax.set_xlabel(f"ms per frame, batch 1, {result['input']}, {result['threads']} thread(s), "
                  f"load {result['loadavg_1m_start']:.1f}->{result['loadavg_1m_end']:.1f}")
    ax.set_title("encoder inference paths (same run, round-robin)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["student"])
    ap.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    ap.add_argument("--size", default="640x480", help="WxH network input")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--recall", action="store_true", help="also R@1 per path on real place sets (minutes)")
    ap.add_argument("--recall-size", default="320x240", help="WxH network input for the Gardens Point recall")
    ap.add_argument("--out", default="benchmarks/results/encoder_paths_cpu_1thread.json")
    args = ap.parse_args()
    size = parse_size(args.size)
    set_compute_threads(args.threads)
    load_start = os.getloadavg()[0]
    frames = real_frames(4)
    calibration = real_frames(16, "day_right")
    camera_frame = cv2.resize(frames[0], (640, 480))
    pre_ms = []
    for _ in range(50):
        t0 = time.perf_counter()
        to_input_tensor([camera_frame], size)
        pre_ms.append((time.perf_counter() - t0) * 1e3)
    skipped = {p: why for p in args.paths if (why := available(p))}
    models = {name: build_model(name, size) for name in args.models}
    encoders = {(name, path): make_encoder(path, model, name, size, calibration)
                for name, model in models.items() for path in args.paths if path not in skipped}
    x = to_input_tensor([camera_frame], size)
    times = time_round_robin(encoders, x, args.warmup, args.iters)
    rows = []
    for (name, path), enc in encoders.items():
        ref = encoders.get((name, "torch-fp32"))
        cos = float(np.sum(ref.encode(frames) * enc.encode(frames), axis=1).min()) if ref else None
        row = {"model": name, "path": path, "median_ms": statistics.median(times[(name, path)]),
               "min_ms": min(times[(name, path)]), "iters": args.iters, "min_cosine_vs_torch_fp32": cos}
        if args.recall:
            row["recall@1"] = recall_at_1(path, models[name], name, parse_size(args.recall_size), calibration)
        rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["model"] == row["model"] and r["path"] == "torch-fp32"), None)
        row["speedup_vs_torch_fp32"] = ref["median_ms"] / row["median_ms"] if ref else None
    result = {
        "benchmark": "encoder_latency", "input": f"{size[0]}x{size[1]}", "batch": 1, "threads": args.threads,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_supports_bf16(), "onnxruntime": _version("onnxruntime"),
        "loadavg_1m_start": load_start, "loadavg_1m_end": os.getloadavg()[0],  # other work inflates absolute ms
        "preprocess_640x480_frame_ms_median": statistics.median(pre_ms),
        "skipped_paths": skipped, "rows": rows,
    }
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(f"\n{'model':22s}{'path':20s}{'median ms':>10s}{'x fp32':>8s}{'min cos':>9s}  recall@1")
    for r in rows:
        cos = f"{r['min_cosine_vs_torch_fp32']:.4f}" if r["min_cosine_vs_torch_fp32"] is not None else "-"
        speed = f"{r['speedup_vs_torch_fp32']:.2f}" if r["speedup_vs_torch_fp32"] else "-"
        rec = ", ".join(f"{k} {v:.1f}" for k, v in r.get("recall@1", {}).items())
        print(f"{r['model'][:21]:22s}{r['path']:20s}{r['median_ms']:10.1f}{speed:>8s}{cos:>9s}  {rec}")
    print(f"preprocess 640x480 -> {args.size}: {result['preprocess_640x480_frame_ms_median']:.2f} ms; "
          f"skipped {skipped or '-'}; load {load_start:.1f} -> {result['loadavg_1m_end']:.1f}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _version(package: str) -> str | None:
    try:
        return importlib.import_module(package).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
