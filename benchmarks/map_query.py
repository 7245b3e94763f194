"""Map query latency at robot-map scale: flat vs IVF-PQ, real descriptors + synthetic padding.

Real descriptors: the default model (472-d) on nordland64 at its 320x160 input - every summer
frame (3427) is the real part of the map; the 677 winter test frames are the queries (ground
truth: the same place in summer, +-1 file as in the benchmark's soft ground truth).
Padding up to each map size: synthetic descriptors on the real ones' manifold (a random
mix of two real map descriptors plus noise, L2-normalised), so every query competes with
a realistic crowd. Per map size:
- ``flat`` (exact, up to ``--max-flat``) and ``ivfpq`` (trained on real + padding
  descriptors) at each ``--nprobe``: single-query latency as the node queries (batch 1,
  ``--threads`` faiss threads, through ``DescriptorIndex.search``), median / p95 over
  the queries;
- recall: place R@1 (the top hit is the right summer place) and agreement with exact
  search (IVF-PQ's top hit = flat's top hit); exact search at 1M is brute force in numpy
  chunks, so no 1.8 GB flat index is needed.
Also the machine's single-thread memory read bandwidth, and the time a flat scan cannot beat
at that bandwidth (map bytes / bandwidth): an exact fp32 scan is memory-bound.

    .venv/bin/python benchmarks/map_query.py --out benchmarks/results/map_query_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from structvpr_core.config import ConfigError
from structvpr_core.data.datasets import aligned_folders
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.models.shipped import DEFAULT_MODEL, find_checkpoint
from structvpr_core.paths import shared_dir
from structvpr_core.retrieval.index import DescriptorIndex, IndexConfig
from structvpr_core.runtime.encoder import encode_paths, load_encoder
from structvpr_core.runtime.threads import set_compute_threads

TEST_STRETCH = (29000, 35760)
CHUNK = 50_000


def real_descriptors(model: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(map descriptors: all 3427 summer frames, queries: the 677 winter test frames, positive map rows)."""
    root = shared_dir() / "data" / "nordland64"
    summer = aligned_folders(root / "summer", root / "winter").database
    test = aligned_folders(root / "summer", root / "winter", soft_tolerance=10, frame_range=TEST_STRETCH)
    row = {p: i for i, p in enumerate(summer)}
    positives = [np.array([row[test.database[j]] for j in pos]) for pos in test.positives]
    encoder = load_encoder(model, "cpu")
    return encode_paths(encoder, summer), encode_paths(encoder, test.queries), positives


def padding(real: np.ndarray, start: int, count: int, seed: int) -> np.ndarray:
    """Synthetic map descriptors, chunk by chunk reproducible (seeded by their position)."""
    rng = np.random.default_rng([seed, start])
    a, b = real[rng.integers(0, len(real), count)], real[rng.integers(0, len(real), count)]
    mix = rng.uniform(0.0, 1.0, (count, 1)).astype(np.float32)
    x = mix * a + (1 - mix) * b + rng.normal(0, 0.5 / np.sqrt(real.shape[1]), a.shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def map_chunks(real: np.ndarray, size: int, seed: int):
    """(first id, descriptors) chunks of a map of ``size``: the real ones, then padding."""
    yield 0, real
    for start in range(len(real), size, CHUNK):
        yield start, padding(real, start, min(CHUNK, size - start), seed)


def read_bandwidth_gb_s(megabytes: int = 400, repeats: int = 5) -> float:
    """Single-thread memory read bandwidth: best of ``repeats`` sums over a buffer far above cache size."""
    buf = np.ones(megabytes * 1_000_000 // 4, np.float32)
    best = min(_seconds(buf.sum) for _ in range(repeats))
    return buf.nbytes / best / 1e9


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_queries(index: DescriptorIndex, queries: np.ndarray) -> dict:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], 1)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95))}


def top1(index: DescriptorIndex, queries: np.ndarray) -> np.ndarray:
    return index.search(queries, 1)[1][:, 0]


def place_recall(top: np.ndarray, positives: list[np.ndarray]) -> float:
    return 100.0 * float(np.mean([t in pos for t, pos in zip(top, positives)]))


def run_size(size: int, real: np.ndarray, queries: np.ndarray, positives, args) -> dict:
    t0 = time.monotonic()
    exact_top, exact_score = np.full(len(queries), -1), np.full(len(queries), -np.inf, np.float32)
    flat = DescriptorIndex(real.shape[1]) if size <= args.max_flat else None
    train = np.concatenate([real, padding(real, size, args.train_vectors, args.seed)])
    ivf = DescriptorIndex(real.shape[1], IndexConfig("ivfpq", nlist=args.nlist, m=args.m, nbits=8,
                                                     nprobe=max(args.nprobe)))
    ivf.train(train)
    for start, chunk in map_chunks(real, size, args.seed):
        ids = np.arange(start, start + len(chunk))
        scores = queries @ chunk.T  # exact search, chunk by chunk
        best = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), best] > exact_score
        exact_top[better], exact_score[better] = ids[best[better]], scores[np.arange(len(queries)), best][better]
        ivf.add(chunk, ids)
        if flat is not None:
            flat.add(chunk, ids)
    result = {"map_size": size, "real": len(real), "padding": size - len(real),
              "flat_exact_recall@1": place_recall(exact_top, positives), "ivfpq": []}
    if flat is not None:
        result["flat"] = time_queries(flat, queries)
    ivf_inner = faiss.extract_index_ivf(ivf._index)  # the benchmark sweeps nprobe on one trained index
    for nprobe in args.nprobe:
        ivf_inner.nprobe = nprobe
        top = top1(ivf, queries)
        result["ivfpq"].append({"nprobe": nprobe, **time_queries(ivf, queries),
                                "recall@1": place_recall(top, positives),
                                "agreement_with_exact_top1": 100.0 * float(np.mean(top == exact_top))})
    result["build_s"] = time.monotonic() - t0
    return result


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    for r in result["sizes"]:
        nprobe = [x["nprobe"] for x in r["ivfpq"]]
        line, = ax_t.plot(nprobe, [x["median_ms"] for x in r["ivfpq"]], "o-", label=f"ivfpq {r['map_size']:,}")
        ax_r.plot(nprobe, [x["recall@1"] for x in r["ivfpq"]], "o-", color=line.get_color(),
                  label=f"ivfpq {r['map_size']:,}")
        ax_r.axhline(r["flat_exact_recall@1"], color=line.get_color(), ls=":", label=f"exact {r['map_size']:,}")
        if "flat" in r:
            ax_t.axhline(r["flat"]["median_ms"], color=line.get_color(), ls=":", label=f"flat {r['map_size']:,}")
    ax_t.set(xscale="log", yscale="log", xlabel="nprobe", ylabel="median ms per query (batch 1)",
             title=f"query latency, {result['threads']} thread(s), load {result['loadavg_end']:.1f}")
    ax_r.set(xscale="log", xlabel="nprobe", ylabel="place R@1 (%)", title="nordland64 test queries")
    ax_t.legend(fontsize=8)
    ax_r.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(find_checkpoint(DEFAULT_MODEL)), help="default: the default model")
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--max-flat", type=int, default=100_000, help="largest map also timed with a flat index")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=0, help="PQ sub-quantizers (must divide the dimension); default "
                                                     "0 = IndexConfig's about dim / 4 (dim / 8 lost 6 R@1 points at 100k)")
    ap.add_argument("--nprobe", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--train-vectors", type=int, default=20_000, help="padding descriptors added to the training set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/map_query_cpu.json")
    args = ap.parse_args()
    set_compute_threads(args.threads)
    load_start = os.getloadavg()[0]
    real, queries, positives = real_descriptors(args.model)
    dim = real.shape[1]
    try:  # resolved (m = 0: about dim / 4) and checked up front, not after minutes of building
        args.m = IndexConfig("ivfpq", nlist=args.nlist, m=args.m).for_dim(dim).m
    except ConfigError as e:
        raise SystemExit(f"--m: {e}") from None
    bandwidth = read_bandwidth_gb_s()
    real_only = place_recall((queries @ real.T).argmax(axis=1), positives)
    result = {"benchmark": "map_query", "model": args.model, "dim": int(real.shape[1]), "queries": len(queries),
              "real_map_only_recall@1": real_only, "threads": args.threads, "nlist": args.nlist, "m": args.m, "nbits": 8,
              "loadavg_1m_start": load_start, "read_bandwidth_gb_s": bandwidth, "sizes": []}
    out = Path(args.out)
    sizes = result["sizes"]
    for size in args.sizes:  # written after each size: the 1M one takes long on a busy machine
        print(f"map size {size:,} ...", flush=True)
        sizes.append(run_size(size, real, queries, positives, args))
        sizes[-1]["flat_bandwidth_bound_ms"] = size * dim * 4 / (bandwidth * 1e9) * 1e3
        result["loadavg_end"] = os.getloadavg()[0]
        atomic_write_text(out, json.dumps(result, indent=2))
        plot(result, out.with_suffix(".png"))
    print(f"\n{'map':>10s} {'index':14s}{'median ms':>10s}{'p95 ms':>8s}{'R@1':>7s}{'= exact':>9s}")
    for r in sizes:
        if "flat" in r:
            f = r["flat"]
            print(f"{r['map_size']:>10,} {'flat':14s}{f['median_ms']:10.3f}{f['p95_ms']:8.3f}"
                  f"{r['flat_exact_recall@1']:7.1f}{100.0:9.1f}")
        else:
            print(f"{r['map_size']:>10,} {'exact (numpy)':14s}{'-':>10s}{'-':>8s}{r['flat_exact_recall@1']:7.1f}")
        for x in r["ivfpq"]:
            print(f"{r['map_size']:>10,} {'ivfpq np=' + str(x['nprobe']):14s}{x['median_ms']:10.3f}{x['p95_ms']:8.3f}"
                  f"{x['recall@1']:7.1f}{x['agreement_with_exact_top1']:9.1f}")
    print(f"R@1 of the {len(real)} real map descriptors alone: {real_only:.1f}")
    for r in sizes:
        print(f"flat fp32 at {r['map_size']:,} reads {r['map_size'] * dim * 4 / 1e6:.0f} MB per query: >= "
              f"{r['flat_bandwidth_bound_ms']:.1f} ms at the measured {bandwidth:.1f} GB/s (1 thread)")
    print(f"load {load_start:.1f} -> {result['loadavg_end']:.1f}; wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
