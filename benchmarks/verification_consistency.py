"""Accuracy and stability of geometric verification without pose ground truth, per estimator.

The shared data has no camera poses, so the relative rotations that ``verify`` returns are
judged by rotation cycle consistency: for an image triplet (a, b, c) with all three pairs
verified, ``R_ac`` should equal ``R_bc @ R_ab``; the angle of ``R_ac^T R_bc R_ab`` is the
cycle error (it sums the errors of three estimates, so a perfect estimator gives ~0).
Triplets are real Gardens Point frames at 640x480: (day_left N, day_right N, day_right N+2)
and (day_left N, day_left N+1, day_right N+1).

RANSAC's answer also depends on the order of the matches (OpenCV seeds its sampler with a
fixed state), so each estimator runs on the original feature order and on ``--orders - 1``
random permutations of every image's features: the spread over orders is the estimator's
own randomness. Verdict stability = share of pairs whose verified flag is the same in every
order. Every triplet pair shows the same place (within 2 frames), so verifying it is right;
``--false-pairs`` pairs of different places (day_left N vs day_right N + 40..160) show how
often a wrong candidate is verified. Time = ``verify`` per pair (matching + essential
matrix + pose), 1 thread.

    .venv/bin/python benchmarks/verification_consistency.py --out benchmarks/results/verification_consistency_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from structvpr_core.io_utils import atomic_write_text
from structvpr_core.loop_closure.geometry import (
    ESSENTIAL_ESTIMATORS, GeometryConfig, LocalFeatures, extract_features, rotation_angle_deg, verify,
)
from structvpr_core.data.images import read_rgb
from structvpr_core.paths import shared_dir
from structvpr_core.runtime.preprocess import resize_rgb
from structvpr_core.runtime.threads import set_compute_threads


def frame(name: str) -> np.ndarray:
    return resize_rgb(read_rgb(shared_dir() / "data/gardenspoint" / f"{name}.jpg"), (640, 480))


def triplets(step: int) -> list[tuple[str, str, str]]:
    out = []
    for n in range(1, 197, step):
        out.append((f"day_left/Image{n:03d}", f"day_right/Image{n:03d}", f"day_right/Image{n + 2:03d}"))
        out.append((f"day_left/Image{n:03d}", f"day_left/Image{n + 1:03d}", f"day_right/Image{n + 1:03d}"))
    return out


def false_pairs(count: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    return [(f"day_left/Image{n:03d}", f"day_right/Image{(n + rng.integers(40, 161)) % 200:03d}")
            for n in rng.integers(0, 200, count)]


def permuted(features: LocalFeatures, seed: int | None) -> LocalFeatures:
    if seed is None:
        return features
    order = np.random.default_rng(seed).permutation(len(features))
    return LocalFeatures(features.keypoints[order], features.descriptors[order], features.image_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimators", nargs="+", default=list(ESSENTIAL_ESTIMATORS), choices=list(ESSENTIAL_ESTIMATORS))
    ap.add_argument("--step", type=int, default=3, help="frame step between triplets (default 3: 132 triplets)")
    ap.add_argument("--orders", type=int, default=3, help="feature orders per estimator (original + permutations)")
    ap.add_argument("--false-pairs", type=int, default=150, help="pairs of different places")
    ap.add_argument("--out", default="benchmarks/results/verification_consistency_cpu.json")
    args = ap.parse_args()
    set_compute_threads(1)
    load_start = os.getloadavg()[0]
    trips = triplets(args.step)
    base = GeometryConfig()
    true_pairs = sorted({pair for a, b, c in trips for pair in ((a, b), (b, c), (a, c))})
    wrong_pairs = sorted(set(false_pairs(args.false_pairs)) - set(true_pairs))
    pairs = true_pairs + wrong_pairs
    names = sorted({name for pair in pairs for name in pair})
    features = {name: extract_features(frame(name), base.max_features) for name in tqdm(names, desc="ORB features")}
    seeds = [None, *range(1, args.orders)]

    result = {"benchmark": "verification_consistency", "image": "640x480", "triplets": len(trips),
              "true_pairs": len(true_pairs), "false_pairs": len(wrong_pairs), "orders": args.orders, "config": vars(base), "estimators": {}}
    for estimator in args.estimators:
        config = replace(base, estimator=estimator)
        verdicts, cycle_errors, times = [], [], []
        for seed in tqdm(seeds, desc=estimator):
            feats = {name: permuted(f, seed) for name, f in features.items()}
            pose = {}
            for a, b in pairs:
                t0 = time.perf_counter()
                v = verify(feats[a], feats[b], config)
                times.append(time.perf_counter() - t0)
                pose[(a, b)] = v.rotation if v.verified else None
            verdicts.append([pose[p] is not None for p in pairs])
            errors = [rotation_angle_deg(pose[(a, c)].T @ pose[(b, c)] @ pose[(a, b)])
                      for a, b, c in trips if all(pose[p] is not None for p in ((a, b), (b, c), (a, c)))]
            cycle_errors.append(errors)
        verdicts = np.array(verdicts)
        all_errors = np.concatenate([np.asarray(e) for e in cycle_errors])
        result["estimators"][estimator] = {
            "verify_ms_mean": 1e3 * float(np.mean(times)),
            "verify_ms_p95": 1e3 * float(np.percentile(times, 95)),
            "verified_true_pairs_per_order": verdicts[:, :len(true_pairs)].sum(axis=1).tolist(),
            "verified_false_pairs_per_order": verdicts[:, len(true_pairs):].sum(axis=1).tolist(),
            "verdict_stable_share": float(np.mean(verdicts.all(axis=0) | ~verdicts.any(axis=0))),
            "closed_triplets_per_order": [len(e) for e in cycle_errors],
            "cycle_error_deg_median_per_order": [float(np.median(e)) if e else None for e in cycle_errors],
            "cycle_error_deg_median": float(np.median(all_errors)),
            "cycle_error_deg_p90": float(np.percentile(all_errors, 90)),
            "cycle_error_over_5deg_share": float(np.mean(all_errors > 5)),
        }
    result["loadavg_1m_start"], result["loadavg_1m_end"] = load_start, os.getloadavg()[0]
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))

    print(f"\n{len(trips)} triplets ({len(true_pairs)} same-place pairs) + {len(wrong_pairs)} different-place pairs of "
          f"Gardens Point frames at 640x480, {args.orders} feature orders, 1 thread, "
          f"load {load_start:.1f} -> {result['loadavg_1m_end']:.1f}")
    print(f"{'estimator':10s}{'verify ms':>10s}{'p95':>7s}{'true verified':>16s}{'false verified':>16s}{'stable':>8s}"
          f"{'closed':>12s}{'cycle deg med':>15s}{'p90':>7s}{'>5 deg':>8s}")
    for estimator, r in result["estimators"].items():
        print(f"{estimator:10s}{r['verify_ms_mean']:10.2f}{r['verify_ms_p95']:7.1f}"
              f"{'/'.join(map(str, r['verified_true_pairs_per_order'])):>16s}"
              f"{'/'.join(map(str, r['verified_false_pairs_per_order'])):>16s}{100 * r['verdict_stable_share']:7.1f}%"
              f"{'/'.join(map(str, r['closed_triplets_per_order'])):>12s}{r['cycle_error_deg_median']:15.2f}"
              f"{r['cycle_error_deg_p90']:7.1f}{100 * r['cycle_error_over_5deg_share']:7.1f}%")
    if len(result["estimators"]) > 1:
        first, *rest = result["estimators"]
        for other in rest:
            print(f"time {other} / {first}: {result['estimators'][other]['verify_ms_mean'] / result['estimators'][first]['verify_ms_mean']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
