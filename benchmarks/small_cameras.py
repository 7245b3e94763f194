"""Verification on small cameras: XFeat at native size vs enlarged to 640 px, true vs wrong pairs.

A robot's camera may be far smaller than the 640-wide frames the verification defaults were
chosen on (an indoor robot at 160x120, a downsampled stream). XFeat localises keypoints to
about a pixel of what its network sees, so a small image gives few keypoints and true pairs
fall under ``min_inliers``. This benchmark measures, per camera width, what enlarging the
image for the network (``GeometryConfig.min_image_width``) buys, and below which size no
verification can be trusted (``min_image_pixels``).

Data (val only): Gardens Point val frames (``GARDENSPOINT_SPLITS['val']``) shrunk at their own
16:9 aspect to each camera width (INTER_AREA, as a smaller sensor sees them); queries
night_right (day/night) and day_left (viewpoint) against day_right, all at the same width.
True pairs = day_right N-2..N+2, wrong pairs = ``--wrong`` day_right frames more than 20
frames away (seeded). And nordland64 val at its real 64x32: winter queries against summer,
true = the same frame +-1 file, wrong = frames more than 50 files away.

Arms: ``native`` (the network sees the camera's pixels: ``min_image_width`` 0), ``enlarged``
(to 640 px, RANSAC threshold scaled with the enlargement: the shipped rule) and
``enlarged_camera_px`` (enlarged, threshold left at 1.5 camera pixels: why it is scaled).
Inliers are ``geometry.verify``'s (USAC essential matrix after cheirality), counted for every
pair (``min_inliers`` 5, no pixel floor) and then read at the shipped ``min_inliers``.

``--missions SPLIT --camera-width W``: the Gardens Point missions of that split
(``evaluation.missions``) with every frame shrunk to a W-wide camera, played in mapping mode
through ``LoopDetector`` at the shipped defaults with the default model (at its input rule),
verification features native vs enlarged: what a small-camera robot would be published.

    .venv/bin/python benchmarks/small_cameras.py
(-> benchmarks/results/small_cameras_val.json + .png, and a printed table)
    .venv/bin/python benchmarks/small_cameras.py --missions val --camera-width 160
(-> benchmarks/results/small_cameras_missions_val_160.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch  # noqa: F401  (loaded before set_compute_threads, so torch gets the thread count too)

from structvpr_core.data.datasets import GARDENSPOINT_SPLITS
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.loop_closure.geometry import GeometryConfig, verify
from structvpr_core.loop_closure.local_features import FeatureExtractor
from structvpr_core.paths import shared_dir
from structvpr_core.progress import progress
from structvpr_core.runtime.threads import set_compute_threads

WIDTHS = (64, 96, 128, 160, 240, 320, 480, 640)
CONDITIONS = ("night_right", "day_left")  # queries, against day_right
TRUE_OFFSETS = (-2, -1, 0, 1, 2)
WRONG_MIN_OFFSET = 20
NORDLAND_FRAMES = (24000, 28990)  # nordland64 val
NORDLAND_STEP = 100  # every 10th frame file (files are 10 frames apart)
NORDLAND_WRONG_MIN_OFFSET = 500


def arms(shipped: GeometryConfig, width: int) -> dict[str, GeometryConfig]:
    """The three arms at one camera width; every pair counted (min_inliers 5, no floor)."""
    count_all = dict(min_inliers=5, min_image_pixels=0, min_keypoints=0)
    enlarged = dataclasses.replace(shipped, **count_all)
    scale = enlarged.min_image_width / width if width < enlarged.min_image_width else 1.0
    return {"native": dataclasses.replace(enlarged, min_image_width=0),
            "enlarged": enlarged,
            "enlarged_camera_px": dataclasses.replace(enlarged, ransac_threshold_px=shipped.ransac_threshold_px * scale)}


def shrink(rgb: np.ndarray, width: int) -> np.ndarray:
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    return rgb if rgb.shape[1] == width else cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def summary(true: list[int], wrong: list[int], min_inliers: int, keypoints: list[int], ms: list[float]) -> dict:
    t, w = np.asarray(true), np.asarray(wrong)
    auc = float((t[:, None] > w[None]).mean() + 0.5 * (t[:, None] == w[None]).mean())
    return {"keypoints_median": float(np.median(keypoints)), "extraction_ms_mean": float(np.mean(ms)),
            "true_median": float(np.median(t)), "wrong_max": int(w.max()), "roc_auc": auc,
            "true_verified": float((t >= min_inliers).mean()), "wrong_verified": int((w >= min_inliers).sum()),
            "pairs_true": len(t), "pairs_wrong": len(w)}


def measure(config: GeometryConfig, queries, database, pairs, min_inliers: int, label: str) -> dict:
    """``queries`` / ``database``: id -> RGB image; ``pairs``: (query id, true ids, wrong ids)."""
    extractor = FeatureExtractor.from_config(config)
    feats, ms = {}, []
    def features(side: str, key, image: np.ndarray):
        if (side, key) not in feats:
            start = time.perf_counter()
            feats[(side, key)] = extractor(image)
            ms.append((time.perf_counter() - start) * 1e3)
        return feats[(side, key)]
    true, wrong, keypoints = [], [], []
    for q, true_ids, wrong_ids in progress(pairs, desc=label):
        fq = features("q", q, queries[q])
        keypoints.append(len(fq))
        true += [verify(fq, features("d", c, database[c]), config).inliers for c in true_ids]
        wrong += [verify(fq, features("d", c, database[c]), config).inliers for c in wrong_ids]
    return summary(true, wrong, min_inliers, keypoints, ms)


def gardenspoint_pairs(wrong_per_query: int, seed: int) -> list[tuple[int, list[int], list[int]]]:
    first, last = GARDENSPOINT_SPLITS["val"]
    rng = np.random.default_rng(seed)
    return [(n, [n + d for d in TRUE_OFFSETS if 0 <= n + d < 200],
             [int(w) for w in rng.choice([w for w in range(200) if abs(w - n) > WRONG_MIN_OFFSET],
                                         wrong_per_query, replace=False)])
            for n in range(first, last + 1)]


def nordland_pairs(wrong_per_query: int, seed: int) -> list[tuple[int, list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    frames = list(range(NORDLAND_FRAMES[0], NORDLAND_FRAMES[1] + 1, NORDLAND_STEP))
    return [(n, [n + d for d in (-10, 0, 10)],
             [int(w) for w in rng.choice([w for w in frames if abs(w - n) > NORDLAND_WRONG_MIN_OFFSET],
                                         wrong_per_query, replace=False)]) for n in frames]


def run_missions(split: str, width: int, out: Path) -> None:
    from structvpr_core.evaluation.missions import missions, play_mission
    from structvpr_core.runtime.encoder import load_encoder
    from structvpr_core.models.shipped import DEFAULT_MODEL

    shipped = LoopClosureConfig()
    encoder = load_encoder(DEFAULT_MODEL, device="cpu")
    rows = []
    for mission in [m for m in missions(split) if m.name.startswith("gardenspoint")]:
        frames = mission.frames(shared_dir() / "data")
        images = [shrink(read_rgb(f.path), width) for f in progress(frames, desc=f"reading {mission.name}")]
        descriptors = np.concatenate([encoder.encode(images[i:i + 16]) for i in range(0, len(images), 16)])
        for arm, geometry in (("native", dataclasses.replace(shipped.geometry, min_image_width=0)),
                              ("enlarged", shipped.geometry)):
            extract = FeatureExtractor.from_config(geometry)
            features = [extract(rgb) for rgb in progress(images, desc=f"{arm} features")]
            config = dataclasses.replace(shipped, geometry=geometry)
            result = play_mission(frames, descriptors, config, features).score(mission.revisit_radius,
                                                                               config.exclude_recent_s)
            op = result["published"]
            wrong = [w for w in result.get("worst_false_positives", []) if w["published"]]
            rows.append({"mission": mission.name, "camera_width": width, "arm": arm,
                         "recall_at_100_precision": result["recall_at_100_precision"], "published": op,
                         "published_wrong": wrong})
            print(f"{mission.name} at {width} px, {arm}: {op['loop_closures']} published, {op['false_positives']} "
                  f"wrong, recall {op['recall'] or 0:.2f}; recall@100%P {result['recall_at_100_precision']:.2f}"
                  + "".join(f"\n    wrong: {w['query']} -> {w['candidate']} ({w['inliers']} inliers, {w['offset']:g} "
                            f"frames off)" for w in wrong),
                  flush=True)
    atomic_write_text(out, json.dumps({"benchmark": "small_cameras missions", "split": split,
                                       "camera_width": width, "model": DEFAULT_MODEL, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="camera widths (pixels), comma-separated")
    ap.add_argument("--wrong", type=int, default=5, help="wrong pairs per query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--missions", choices=("val", "test"), help="play that split's Gardens Point missions instead")
    ap.add_argument("--camera-width", type=int, default=160, help="--missions: camera width (pixels)")
    ap.add_argument("--out", help="default benchmarks/results/small_cameras_val.json "
                                  "(--missions: small_cameras_missions_{split}_{width}.json)")
    args = ap.parse_args()
    set_compute_threads(args.threads)
    if args.missions:
        run_missions(args.missions, args.camera_width, Path(args.out or f"benchmarks/results/small_cameras_missions_"
                                                                       f"{args.missions}_{args.camera_width}.json"))
        return
    args.out = args.out or "benchmarks/results/small_cameras_val.json"
    shipped = LoopClosureConfig().geometry
    data = shared_dir() / "data"
    pairs = gardenspoint_pairs(args.wrong, args.seed)
    needed = {n for q, t, w in pairs for n in [q, *t, *w]}
    frames = {(trav, n): read_rgb(data / "gardenspoint" / trav / f"Image{n:03d}.jpg")
              for trav in ("day_right", *CONDITIONS) for n in needed
              if trav == "day_right" or n in {q for q, _, _ in pairs}}
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        small = {key: shrink(rgb, width) for key, rgb in frames.items()}
        size = small[("day_right", pairs[0][0])].shape[1::-1]
        for arm, config in arms(shipped, width).items():
            for condition in CONDITIONS:
                queries = {n: small[(condition, n)] for n, _, _ in pairs}
                database = {n: small[("day_right", n)] for n in needed}
                row = measure(config, queries, database, pairs, shipped.min_inliers, f"{width}px {arm} {condition}")
                rows.append({"set": "gardenspoint val", "condition": condition, "camera": f"{size[0]}x{size[1]}",
                             "pixels": int(size[0] * size[1]), "arm": arm, **row})
    npairs = nordland_pairs(args.wrong, args.seed)
    nordland = {(season, n): read_rgb(data / "nordland64" / season / f"images-{n:05d}.png")
                for season in ("summer", "winter") for q, t, w in npairs for n in [q, *t, *w]}
    for arm, config in arms(shipped, 64).items():
        queries = {n: nordland[("winter", n)] for n, _, _ in npairs}
        database = {key[1]: rgb for key, rgb in nordland.items() if key[0] == "summer"}
        row = measure(config, queries, database, npairs, shipped.min_inliers, f"nordland64 {arm}")
        rows.append({"set": "nordland64 val", "condition": "winter->summer", "camera": "64x32", "pixels": 2048,
                     "arm": arm, **row})
    result = {"benchmark": "small_cameras", "split": "val", "seed": args.seed, "threads": args.threads,
              "wrong_per_query": args.wrong, "shipped_geometry": dataclasses.asdict(shipped), "rows": rows}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print_table(rows, shipped.min_inliers)
    plot(rows, out.with_suffix(".png"), shipped.min_inliers)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def print_table(rows: list[dict], min_inliers: int) -> None:
    print(f"\n| set | condition | camera | arm | keypoints | ms | true inliers (median) | wrong max | ROC AUC | "
          f"true >= {min_inliers} | wrong >= {min_inliers} |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['set']} | {r['condition']} | {r['camera']} | {r['arm']} | {r['keypoints_median']:.0f} | "
              f"{r['extraction_ms_mean']:.1f} | {r['true_median']:.0f} | {r['wrong_max']} | {r['roc_auc']:.3f} | "
              f"{r['true_verified']:.2f} | {r['wrong_verified']}/{r['pairs_wrong']} |")


def plot(rows: list[dict], path: Path, min_inliers: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, condition in zip(axes, CONDITIONS):
        for arm, style in (("native", "o-"), ("enlarged", "s-"), ("enlarged_camera_px", "^--")):
            mine = [r for r in rows if r["condition"] == condition and r["arm"] == arm]
            px = [r["pixels"] for r in mine]
            ax.plot(px, [r["true_median"] for r in mine], style, label=f"{arm}: true median")
            ax.plot(px, [r["wrong_max"] for r in mine], style, alpha=0.4, label=f"{arm}: wrong max")
        ax.axhline(min_inliers, color="k", lw=0.8, ls=":", label=f"min_inliers {min_inliers}")
        ax.set_xscale("log")
        ax.set_xlabel("camera pixels (Gardens Point val, 16:9)")
        ax.set_title(f"{condition} -> day_right")
    axes[0].set_ylabel("essential-matrix inliers (XFeat)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
