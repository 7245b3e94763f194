"""Added latency of sequence matching per keyframe: the node's loop-closure call at N map keyframes.

Times ``LoopDetector.detect`` - the call the node's worker makes per keyframe after
encoding - over one map of N keyframes (default 10,000, 448-d = the StructVPR
student), for sequence_length 1 (today's single-frame faiss query) and each L given,
round-robin in the same run so load changes hit every variant alike. Each variant has
its own detector (its own ring buffer) fed the same query stream. Reports median / p95
ms per call and the added latency and ratio against L = 1, for localization (fixed
map) and mapping mode (recency exclusion: an eligibility mask over the map's stamps),
plus ``matcher only``: ``SequenceMatcher.push`` on a ready similarity row, the part
sequence matching adds on top of scoring the query against every keyframe.
faiss runs single-threaded, as in the node's worker. Descriptors are random unit
vectors: the cost depends on the map size and dimension, not on the content.

Two clocks per call: wall time (``perf_counter``) and the calling thread's CPU time
(``thread_time``). On a shared, overloaded CPU the wall time mostly measures how long
the scheduler kept the thread off a core (medians of 2-80 ms for the same 1 ms of
work at load 13 on 2 cores); the CPU time is the work the call itself costs, so the
added latency and the ratios are taken from it, the wall figures are kept beside them.

    .venv/bin/python benchmarks/sequence_latency.py --out benchmarks/results/sequence_latency_cpu.json
    # --keyframes, --dim, --lengths 1 5 10 20, --iters, --velocity-steps

The machine may be shared: the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from structvpr_core.io_utils import atomic_write_text  # noqa: E402
from structvpr_core.loop_closure.candidates import NS_PER_S, LoopClosureConfig, LoopDetector  # noqa: E402
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity  # noqa: E402
from structvpr_core.retrieval.sequence import SequenceConfig, SequenceMatcher  # noqa: E402


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def time_round_robin(calls: dict, n: int, warmup: int) -> dict[str, dict[str, float]]:
    """Call every variant on query i, for i in 0..n-1 (round-robin: the same load for all); stats vs L = 1."""
    cpu = {length: [] for length in calls}
    wall = {length: [] for length in calls}
    for i in range(n):
        for length, call in calls.items():
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            call(i)
            if i >= warmup:
                cpu[length].append((time.thread_time() - t_cpu) * 1e3)
                wall[length].append((time.perf_counter() - t_wall) * 1e3)
    base = float(np.median(cpu[1]))
    return {
        str(length): {"cpu_median_ms": float(np.median(cpu[length])),
                      "cpu_p95_ms": float(np.percentile(cpu[length], 95)),
                      "added_cpu_ms": float(np.median(cpu[length])) - base,
                      "ratio_vs_single_frame": float(np.median(cpu[length])) / base,
                      "wall_median_ms": float(np.median(wall[length])),
                      "wall_p95_ms": float(np.percentile(wall[length], 95))}
        for length in calls
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=448)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--velocity-steps", type=int, default=SequenceConfig().velocity_steps)
    parser.add_argument("--iters", type=int, default=300, help="timed calls per variant and mode")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    if 1 not in args.lengths:
        args.lengths = [1, *args.lengths]  # the baseline the ratios need
    faiss.omp_set_num_threads(1)  # the node's worker does the same

    rng = np.random.default_rng(0)
    db = MapDatabase(ModelIdentity("benchmark-random", args.dim))
    n = args.keyframes
    db.add_batch(unit_rows(rng, n, args.dim), np.arange(n) * NS_PER_S, ["camera"] * n)
    queries = unit_rows(rng, args.warmup + args.iters, args.dim)
    query_t0 = (n + 1000) * NS_PER_S  # mapping mode: the map's last 30 s are excluded

    results = {}
    for mode in ("localization", "mapping"):
        detectors = {length: LoopDetector(db, LoopClosureConfig(
            top_k=5, sequence=SequenceConfig(length=length, velocity_steps=args.velocity_steps)))
            for length in args.lengths}
        stamp0 = query_t0 if mode == "mapping" else 0
        calls = {length: (lambda i, d=d, mapping=mode == "mapping": d.detect(
            queries[i], stamp0 + i * NS_PER_S, exclude_recent=mapping)) for length, d in detectors.items()}
        results[mode] = time_round_robin(calls, len(queries), args.warmup)
    rows = [db.similarities(q) for q in queries]
    matchers = {length: SequenceMatcher(SequenceConfig(length=length, velocity_steps=args.velocity_steps))
                for length in args.lengths}
    results["matcher only"] = time_round_robin(
        {length: (lambda i, m=m: m.push(rows[i])) for length, m in matchers.items()}, len(queries), args.warmup)

    report = {
        "benchmark": "sequence_latency", "keyframes": n, "dim": args.dim, "iters": args.iters,
        "velocity_steps": args.velocity_steps, "faiss_threads": 1,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average": list(os.getloadavg())},
        "results": results,
    }
    print(f"LoopDetector.detect at {n} keyframes, {args.dim}-d, {args.velocity_steps} velocities, "
          f"median of {args.iters} (load {report['machine']['load_average'][0]:.1f})")
    print(f"{'mode':<13}{'L':>4}{'cpu ms':>9}{'cpu p95':>9}{'added':>8}{'ratio':>7}{'wall ms':>9}{'wall p95':>10}")
    for mode, rows in results.items():
        for length, r in rows.items():
            print(f"{mode:<13}{length:>4}{r['cpu_median_ms']:9.3f}{r['cpu_p95_ms']:9.3f}{r['added_cpu_ms']:8.3f}"
                  f"{r['ratio_vs_single_frame']:7.2f}{r['wall_median_ms']:9.3f}{r['wall_p95_ms']:10.3f}")
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
