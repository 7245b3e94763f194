"""Geometric verification of top_k candidates vs one encoder pass, same frames, same run.

Real Gardens Point frames at 640x480: each query (day_left frame N) is verified against
top_k candidates with their ORB features precomputed (a map stores them). Candidate sets
(``--candidates``): ``mixed`` - the same place from the other side of the path (day_right N),
the next frame (day_left N+1) and unrelated places; ``neighbours`` - day_right N-2..N+2, what
a map with a keyframe every few metres returns for a revisit (every candidate a true match,
the expensive case: each runs the full pose estimation). Per query, round-robin:
the encoder pass (the node's network and inference path, 1 thread), ORB extraction of
the query, and ``verify_many`` against the top_k candidates on ``--verification-threads``
threads (the node's ``verification_threads``). The issue 9 target: verifying top_k = 5 costs
less than one encoder pass.

    .venv/bin/python benchmarks/verification_latency.py --out benchmarks/results/verification_latency_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from structvpr_core.io_utils import atomic_write_text
from structvpr_core.loop_closure.geometry import GeometryConfig, extract_features, verify_many
from structvpr_core.models.shipped import DEFAULT_MODEL, find_checkpoint
from structvpr_core.data.images import read_rgb
from structvpr_core.paths import shared_dir
from structvpr_core.runtime.preprocess import resize_rgb
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.runtime.threads import apply_in_this_thread, set_compute_threads



def frame(traversal: str, number: int):
    return resize_rgb(read_rgb(shared_dir() / "data/gardenspoint" / traversal / f"Image{number:03d}.jpg"), (640, 480))


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(find_checkpoint(DEFAULT_MODEL)), help="default: the default model")
    ap.add_argument("--candidates", choices=("mixed", "neighbours"), default="mixed")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="encoder / faiss / OpenCV threads (the node's cpu_threads)")
    ap.add_argument("--verification-threads", type=int, default=2, help="the node's verification_threads")
    ap.add_argument("--out", default="benchmarks/results/verification_latency_cpu.json")
    args = ap.parse_args()
    set_compute_threads(args.threads)
    pool = ThreadPoolExecutor(args.verification_threads, initializer=apply_in_this_thread)
    load_start = os.getloadavg()[0]
    config = GeometryConfig()
    encoder = load_encoder(args.model, "cpu", (640, 480))
    numbers = [10 + 9 * i for i in range(args.queries)]
    rows = {"encoder_ms": [], "extract_ms": [], "verify_top_k_ms": [], "verified": []}
    for n in numbers:
        query = frame("day_left", n)
        if args.candidates == "neighbours":
            half = args.top_k // 2
            candidates = [frame("day_right", min(max(n + d, 0), 199)) for d in range(-half, args.top_k - half)]
        else:
            unrelated = [(n + 50 + 37 * j) % 199 for j in range(max(0, args.top_k - 2))]
            candidates = [frame("day_right", n), frame("day_left", n + 1), *(frame("day_right", u) for u in unrelated)]
        features = [extract_features(c, config.max_features) for c in candidates[: args.top_k]]
        t0 = time.perf_counter()
        encoder.encode([query])
        rows["encoder_ms"].append(ms_since(t0))
        t0 = time.perf_counter()
        q = extract_features(query, config.max_features)
        rows["extract_ms"].append(ms_since(t0))
        t0 = time.perf_counter()
        results = verify_many(q, features, config, pool=pool)
        rows["verify_top_k_ms"].append(ms_since(t0))
        rows["verified"].append(sum(r.verified for r in results))
    med = {k: statistics.median(v) for k, v in rows.items() if k != "verified"}
    result = {
        "benchmark": "verification_latency", "model": args.model, "inference": encoder.path.describe(),
        "threads": args.threads, "verification_threads": args.verification_threads, "queries": len(numbers),
        "top_k": args.top_k, "candidates": args.candidates,
        "image": "640x480",
        "median_ms": med,
        "p95_ms": {k: sorted(v)[int(0.95 * (len(v) - 1))] for k, v in rows.items() if k != "verified"},
        "verify_top_k_over_encoder": med["verify_top_k_ms"] / med["encoder_ms"],
        "extract_plus_verify_over_encoder": (med["extract_ms"] + med["verify_top_k_ms"]) / med["encoder_ms"],
        "mean_verified_per_query": statistics.mean(rows["verified"]),
        "loadavg_1m_start": load_start, "loadavg_1m_end": os.getloadavg()[0],
        "per_query": rows,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))
    print(f"\n{args.queries} queries, top_k {args.top_k} ({args.candidates}), 640x480, {args.threads} thread(s), "
          f"verification on {args.verification_threads} thread(s), "
          f"{result['inference']}, load {load_start:.1f} -> {result['loadavg_1m_end']:.1f}")
    print(f"{'':28s}{'median ms':>10s}{'p95 ms':>9s}")
    for k in ("encoder_ms", "extract_ms", "verify_top_k_ms"):
        print(f"{k:28s}{med[k]:10.1f}{result['p95_ms'][k]:9.1f}")
    print(f"verify top_k / encoder: {result['verify_top_k_over_encoder']:.2f}; (ORB + verify) / encoder: "
          f"{result['extract_plus_verify_over_encoder']:.2f}; verified per query {result['mean_verified_per_query']:.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
