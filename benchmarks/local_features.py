"""Local features for verification, orb vs xfeat: true/wrong separation, per-keyframe cost, bytes.

Real Gardens Point frames at 640x480 (``resize_rgb``, as the node's 640x480 camera), two
conditions against day_right: night_right (day/night) and day_left (viewpoint, other side
of the path). Queries = the frames of ``--split`` (GARDENSPOINT_SPLITS; val 140..164 is
where choices are made, test 175..199 only reports). Per query: true pairs = day_right
N-2..N+2 (the usual +-2 tolerance), wrong pairs = ``--wrong`` day_right frames more than 20
frames away (seeded). Per pair: mutual/ratio matches, essential-matrix inliers of
``geometry.verify`` (USAC and MAGSAC++; after cheirality, what the node reports) and, for
comparison, fundamental-matrix MAGSAC++ inliers (1.5 px). Separation = share of true pairs
above every wrong pair, ROC AUC, and recall at the smallest inlier threshold that keeps
every wrong pair out.

Cost (``--threads``, default 1): per keyframe, extraction of the query + ``verify`` against
``--top-k`` candidates whose features are precomputed (a map stores them), sequentially on
one thread; candidates = the 5 true neighbours (every candidate runs the full pose
estimation: the expensive case) or frame N + 4 wrong frames (``mixed``). XFeat runtimes (torch fp32 / bf16 autocast, ONNX Runtime,
OpenVINO fp32 / bf16) are timed round-robin on the same frames, with their keypoints'
agreement with torch fp32 (share of identical keypoints, descriptor cosine).

    .venv/bin/python benchmarks/local_features.py --split val --max-features 1024
    .venv/bin/python benchmarks/local_features.py --split val --max-features 512
    .venv/bin/python benchmarks/local_features.py --split test --max-features 512
(-> benchmarks/results/local_features_{split}_{max_features}_cpu.json + .png)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch  # noqa: F401  (loaded before set_compute_threads, so torch gets the thread count too)

from structvpr_core.config import ConfigError
from structvpr_core.data.datasets import GARDENSPOINT_SPLITS
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.loop_closure.geometry import GeometryConfig, verify
from structvpr_core.loop_closure.local_features import FeatureExtractor, match
from structvpr_core.loop_closure.rerank import fit_inlier_calibration
from structvpr_core.loop_closure.xfeat_features import XFeatExtractor
from structvpr_core.paths import shared_dir
from structvpr_core.progress import progress
from structvpr_core.runtime.preprocess import resize_rgb
from structvpr_core.runtime.threads import set_compute_threads

SIZE = (640, 480)
CONDITIONS = ("night_right", "day_left")  # queries, against day_right
TRUE_OFFSETS = (-2, -1, 0, 1, 2)
WRONG_MIN_OFFSET = 20
RUNTIMES = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
MEASURES = ("matches", "essential_usac", "essential_magsac", "fundamental_magsac")
DEFAULT_MEASURE = "essential_usac"  # what geometry.verify reports with the default estimator


def frame(traversal: str, number: int) -> np.ndarray:
    return resize_rgb(read_rgb(shared_dir() / "data/gardenspoint" / traversal / f"Image{number:03d}.jpg"), SIZE)


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def p95(values) -> float:
    return float(np.percentile(values, 95))


def pair_measures(q, c, config: GeometryConfig) -> dict:
    iq, ic = match(q, c, config.features, config.ratio_test, config.min_cosine)
    out = {"matches": len(iq)}
    for estimator in ("usac", "magsac"):
        # min_inliers 5: count inliers for every pair (the node's threshold is applied afterwards)
        cfg = GeometryConfig(**{**config.__dict__, "estimator": estimator, "min_inliers": 5})
        out[f"essential_{estimator}"] = verify(q, c, cfg).inliers
    out["fundamental_magsac"] = 0
    if len(iq) >= 8:
        try:
            _, mask = cv2.findFundamentalMat(q.keypoints[iq], c.keypoints[ic], cv2.USAC_MAGSAC, 1.5, 0.999, 10000)
            out["fundamental_magsac"] = 0 if mask is None else int(mask.sum())
        except cv2.error:  # OpenCV 5's MAGSAC asserts on some degenerate match sets: no model
            pass
    return out


def separation(true: list[int], wrong: list[int]) -> dict:
    t, w = np.asarray(true), np.asarray(wrong)
    # ROC AUC = P(true > wrong) + 0.5 P(tie)
    auc = float(((t[:, None] > w[None]).mean() + 0.5 * (t[:, None] == w[None]).mean()))
    threshold = int(w.max()) + 1  # smallest inlier count no wrong pair reaches
    return {"true_median": float(np.median(t)), "true_p10": float(np.percentile(t, 10)),
            "wrong_median": float(np.median(w)), "wrong_max": int(w.max()),
            "share_true_above_every_wrong": float((t > w.max()).mean()), "roc_auc": auc,
            "precision_1_threshold": threshold, "recall_at_precision_1": float((t >= threshold).mean())}


def agreement(a, b) -> dict:
    """Keypoints of ``a`` found at the same pixel in ``b``, and their descriptors' cosine."""
    index = {tuple(p): i for i, p in enumerate(b.keypoints.tolist())}
    pairs = [(i, index[tuple(p)]) for i, p in enumerate(a.keypoints.tolist()) if tuple(p) in index]
    if not pairs:
        return {"same_keypoints": 0.0, "descriptor_cosine_median": None}
    ia, ib = map(list, zip(*pairs))
    cos = np.sum(a.descriptors[ia].astype(np.float32) * b.descriptors[ib].astype(np.float32), axis=1)
    return {"same_keypoints": len(pairs) / max(len(a), len(b)), "descriptor_cosine_median": float(np.median(cos)),
            "descriptor_cosine_min": float(cos.min())}


def time_runtimes(numbers: list[int], max_features: int, rounds: int) -> dict:
    images = [frame(t, n) for n in numbers for t in ("night_right", "day_right")]
    extractors = {}
    for runtime, precision in RUNTIMES:
        try:
            extractors[f"{runtime} {precision}"] = XFeatExtractor(max_features, SIZE[0], runtime, precision=precision)
        except ConfigError as e:  # a runtime this machine lacks (no bf16, no OpenVINO): say so, go on
            print(f"skipping xfeat {runtime} {precision}: {e}")
    for ex in extractors.values():
        ex(images[0])  # export / compile for this size, outside the timing
    times = {k: [] for k in extractors}
    for _ in range(rounds):
        for img in images:
            for name, ex in extractors.items():  # round-robin: load changes hit every runtime alike
                t0 = time.perf_counter()
                ex(img)
                times[name].append(ms_since(t0))
    reference = [extractors["torch fp32"](img) for img in images]
    out = {}
    for name, ex in extractors.items():
        agree = [agreement(ex(img), ref) for img, ref in zip(images, reference)]
        out[name] = {"median_ms": statistics.median(times[name]), "p95_ms": p95(times[name]),
                     "same_keypoints_mean": float(np.mean([a["same_keypoints"] for a in agree])),
                     "descriptor_cosine_median": float(np.median([a["descriptor_cosine_median"] for a in agree]))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=sorted(GARDENSPOINT_SPLITS), default="val")
    ap.add_argument("--max-features", type=int, default=1024)
    ap.add_argument("--wrong", type=int, default=5, help="wrong pairs per query")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds of the runtime comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=0, help="first N frames of the split only (0 = all; smoke runs)")
    ap.add_argument("--out", help="default benchmarks/results/local_features_{split}_{max_features}_cpu.json")
    args = ap.parse_args()
    args.out = args.out or f"benchmarks/results/local_features_{args.split}_{args.max_features}_cpu.json"
    set_compute_threads(args.threads)
    load_start = os.getloadavg()[0]
    first, last = GARDENSPOINT_SPLITS[args.split]
    numbers = list(range(first, last + 1))[: args.queries or None]
    rng = np.random.default_rng(args.seed)
    wrong = {n: [int(w) for w in rng.choice([w for w in range(200) if abs(w - n) > WRONG_MIN_OFFSET],
                                            args.wrong, replace=False)] for n in numbers}
    configs = {"orb": GeometryConfig(features="orb", max_features=args.max_features),
               "xfeat": GeometryConfig(features="xfeat", max_features=args.max_features)}
    result = {"benchmark": "local_features", "split": args.split, "frames": f"{first}..{last}",
              "image": f"{SIZE[0]}x{SIZE[1]}", "max_features": args.max_features, "threads": args.threads,
              "seed": args.seed, "wrong_per_query": args.wrong, "top_k": args.top_k,
              "configs": {k: c.__dict__ for k, c in configs.items()}, "kinds": {}}

    print("timing XFeat runtimes ...", flush=True)
    result["xfeat_runtimes"] = time_runtimes(numbers[::5], args.max_features, args.rounds)

    histograms = {}
    for kind, config in configs.items():
        extractor = FeatureExtractor.from_config(config)
        cache: dict[tuple[str, int], object] = {}

        def features(traversal: str, n: int):
            if (traversal, n) not in cache:
                cache[(traversal, n)] = extractor(frame(traversal, n))
            return cache[(traversal, n)]

        kind_result = {"conditions": {}}
        labelled = {"inliers": [], "true": []}
        for condition in CONDITIONS:
            rows = {"true": {m: [] for m in MEASURES}, "wrong": {m: [] for m in MEASURES}}
            for n in progress(numbers, desc=f"{kind} {condition} pairs"):
                q = features(condition, n)
                for label, others in (("true", [n + d for d in TRUE_OFFSETS if 0 <= n + d < 200]),
                                      ("wrong", wrong[n])):
                    for c in others:
                        for m, v in pair_measures(q, features("day_right", c), config).items():
                            rows[label][m].append(v)
            kind_result["conditions"][condition] = {
                "separation": {m: separation(rows["true"][m], rows["wrong"][m]) for m in MEASURES},
                "pairs": rows}
            histograms[(kind, condition)] = rows
            labelled["inliers"] += rows["true"][DEFAULT_MEASURE] + rows["wrong"][DEFAULT_MEASURE]
            labelled["true"] += [1] * len(rows["true"][DEFAULT_MEASURE]) + [0] * len(rows["wrong"][DEFAULT_MEASURE])
        calibration = fit_inlier_calibration(labelled["inliers"], labelled["true"])
        kind_result[f"inlier_calibration_{DEFAULT_MEASURE}"] = {"midpoint": calibration.midpoint,
                                                                "scale": calibration.scale}

        # per-keyframe cost: extraction + verify against top_k precomputed candidates, 1 thread;
        # neighbours = the top_k true frames around N (each runs the full pose estimation: the
        # expensive case), mixed = frame N + wrong frames (these stop after matching)
        cost = ("extract_ms", "verify_top_k_ms", "match_ms", "keyframe_ms")
        for case, estimator in (("neighbours", "usac"), ("neighbours", "magsac"), ("mixed", "usac")):
            cfg = GeometryConfig(**{**config.__dict__, "estimator": estimator})
            per = {k: [] for k in cost}
            for condition in CONDITIONS:
                for n in numbers:
                    if case == "neighbours":
                        around = range(-(args.top_k // 2), args.top_k - args.top_k // 2)
                        candidate_numbers = [min(max(n + d, 0), 199) for d in around]
                    else:
                        candidate_numbers = [n, *wrong[n][: args.top_k - 1]]
                    candidates = [features("day_right", c) for c in candidate_numbers]
                    img = frame(condition, n)
                    t0 = time.perf_counter()
                    q = extractor(img)
                    per["extract_ms"].append(ms_since(t0))
                    t0 = time.perf_counter()
                    for c in candidates:
                        verify(q, c, cfg)
                    per["verify_top_k_ms"].append(ms_since(t0))
                    t0 = time.perf_counter()
                    for c in candidates:
                        match(q, c, cfg.features, cfg.ratio_test, cfg.min_cosine)
                    per["match_ms"].append(ms_since(t0) / len(candidates))
                    per["keyframe_ms"].append(per["extract_ms"][-1] + per["verify_top_k_ms"][-1])
            kind_result[f"cost_{case}_{estimator}"] = {k: {"mean": statistics.mean(v), "p95": p95(v)}
                                                       for k, v in per.items()}
        sizes = [f.nbytes for f in cache.values()]
        kind_result["bytes_per_keyframe"] = {"mean": float(np.mean(sizes)), "max": int(max(sizes)),
                                             "keypoints_mean": float(np.mean([len(f) for f in cache.values()]))}
        result["kinds"][kind] = kind_result
    result["loadavg_1m_start"], result["loadavg_1m_end"] = load_start, os.getloadavg()[0]

    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2))
    plot(histograms, out.with_suffix(".png"), args.split, args.max_features)
    print_table(result)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def print_table(result: dict) -> None:
    print(f"\nGardens Point {result['split']} ({result['frames']}), {result['image']}, {result['max_features']} "
          f"keypoints, {result['threads']} thread(s), load {result['loadavg_1m_start']:.1f} -> "
          f"{result['loadavg_1m_end']:.1f}")
    print(f"{'kind':6s} {'condition':12s} {'measure':20s} {'true med':>8s} {'wrong med':>9s} {'wrong max':>9s} "
          f"{'true>max':>8s} {'AUC':>6s} {'R@P1':>6s}")
    for kind, kr in result["kinds"].items():
        for condition, cr in kr["conditions"].items():
            for m, s in cr["separation"].items():
                print(f"{kind:6s} {condition:12s} {m:20s} {s['true_median']:8.1f} {s['wrong_median']:9.1f} "
                      f"{s['wrong_max']:9d} {s['share_true_above_every_wrong']:8.2f} {s['roc_auc']:6.3f} "
                      f"{s['recall_at_precision_1']:6.2f}")
    print(f"\n{'kind':6s} {'candidates, estimator':22s} {'extract mean/p95':>17s} {'verify top-k mean/p95':>22s} "
          f"{'keyframe mean/p95':>18s} {'match/pair':>10s} {'KiB/keyframe':>12s}")
    for kind, kr in result["kinds"].items():
        for case in ("neighbours_usac", "neighbours_magsac", "mixed_usac"):
            c = kr[f"cost_{case}"]
            print(f"{kind:6s} {case:22s} {c['extract_ms']['mean']:8.1f}/{c['extract_ms']['p95']:6.1f} ms "
                  f"{c['verify_top_k_ms']['mean']:13.1f}/{c['verify_top_k_ms']['p95']:6.1f} ms "
                  f"{c['keyframe_ms']['mean']:9.1f}/{c['keyframe_ms']['p95']:6.1f} ms {c['match_ms']['mean']:7.2f} ms "
                  f"{kr['bytes_per_keyframe']['mean'] / 1024:12.1f}")
    print(f"\n{'xfeat runtime':18s} {'median ms':>9s} {'p95 ms':>7s} {'same kp vs torch fp32':>22s} {'desc cos':>9s}")
    for name, r in result["xfeat_runtimes"].items():
        print(f"{name:18s} {r['median_ms']:9.1f} {r['p95_ms']:7.1f} {r['same_keypoints_mean']:22.3f} "
              f"{r['descriptor_cosine_median']:9.4f}")


def plot(histograms: dict, out: Path, split: str, max_features: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _ in histograms})
    fig, axes = plt.subplots(len(kinds), len(CONDITIONS), figsize=(11, 7), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, condition in enumerate(CONDITIONS):
            rows, ax = histograms[(kind, condition)], axes[i][j]
            t, w = rows["true"][DEFAULT_MEASURE], rows["wrong"][DEFAULT_MEASURE]
            bins = np.linspace(0, max(max(t), max(w), 10) + 1, 40)
            ax.hist(w, bins, alpha=0.6, label=f"wrong place (n={len(w)})", color="tab:red")
            ax.hist(t, bins, alpha=0.6, label=f"true place +-2 (n={len(t)})", color="tab:green")
            ax.set_title(f"{kind}: {condition} -> day_right")
            ax.set_xlabel("essential-matrix inliers (USAC, as geometry.verify reports)")
            ax.legend(fontsize=8)
    fig.suptitle(f"Gardens Point {split}, 640x480, {max_features} keypoints: inliers, true vs wrong pairs")
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=90, format="png"))


if __name__ == "__main__":
    main()
