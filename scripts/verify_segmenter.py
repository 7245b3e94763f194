"""Check the segmenters (ESPNet, DeepLab ADE20K) against real CamVid ground truth (shared/data/camvid_sample).

(a) CamVid weights: mIoU over the 11 CamVid classes (11 = Unlabelled is ignored), at
    several inference sizes, plus the same with the Cityscapes input statistics to show
    why the CamVid weights need their own.
(b) Cityscapes weights: mIoU over the 6 StructVPR clusters, predictions and CamVid GT
    both mapped to clusters; with terrain counted as vegetation (used) and as ground.
(c) A figure of one frame: RGB | GT | CamVid-ESPNet | Cityscapes-ESPNet, and the same as
    6 clusters.
(d) DeepLab ADE20K (TFLite): mIoU over the 6 clusters, with the label offset the model is
    documented to have (output channel k = ADE20K class k - 1, channel 0 = other) and,
    as the check of that offset, without it; plus a figure on CamVid, Gardens Point and GRIEF.

Usage: .venv/bin/python scripts/verify_segmenter.py --out /tmp/segmentation_verify.json \
           --figure docs/segmentation_camvid.png --ade20k-figure docs/segmentation_ade20k.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from structvpr_core.io_utils import atomic_write, atomic_write_text  # noqa: E402
from structvpr_core.paths import shared_dir  # noqa: E402
from structvpr_core.segmentation.segment import LABEL_SETS, Segmenter, SegmenterConfig  # noqa: E402
from structvpr_core.segmentation.slme import CLUSTERS_6, load_table  # noqa: E402

# StructVPR's 6 clusters, in SLME channel order (prior weights 0.5, 0.5, 1, 1, 2, 2).
CLUSTERS = ("vegetation", "dynamic objects", "sky", "ground", "buildings", "other")
CLUSTER_COLOURS_RGB = ((107, 142, 35), (220, 20, 60), (70, 130, 180), (128, 64, 128), (70, 70, 70), (220, 220, 0))

# Class -> cluster mappings are the SLME tables (structvpr_core/segmentation/slme_tables/*.yaml), so
# what is verified here is exactly what the seg branch is fed. Cityscapes "terrain" goes to
# vegetation there (reason in the table); TERRAIN_AS_GROUND checks that this choice barely
# matters on CamVid.
TERRAIN_AS_GROUND = {"terrain": "ground"}
# A predicted void pixel still needs a cluster in SLME; it goes to "other".
PREDICTED_VOID_CLUSTER = "other"  # SLME itself encodes void as all-zero
IGNORE = 255

CAMVID_SIZES = ((320, 240), (480, 360), (640, 480), (960, 720))
CITYSCAPES_SIZES = ((480, 360), (640, 480), (960, 720), (1024, 512))
FIGURE_FRAME = "Seq05VD_f02460"


def camvid_sample_dir() -> Path:
    root = shared_dir() / "data" / "camvid_sample"
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise FileNotFoundError(f"camvid_sample not found at {root} (set STRUCTVPR_SHARED)")
    return root


def espnet_weights(dataset: str) -> Path:
    path = shared_dir() / "models" / "espnet" / f"espnet_p2_q8_{dataset}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"ESPNet weights not found: {path} (set STRUCTVPR_SHARED)")
    return path


def load_camvid_sample(names: list[str] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB uint8 image, uint8 GT labels 0..11) for the given frame names (default: all)."""
    root = camvid_sample_dir()
    names = names or sorted(p.stem for p in (root / "images").glob("*.png"))
    frames = []
    for name in names:
        bgr = cv2.imread(str(root / "images" / f"{name}.png"), cv2.IMREAD_COLOR)
        gt = cv2.imread(str(root / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        if bgr is None or gt is None:
            raise FileNotFoundError(f"camvid_sample frame {name} missing or unreadable under {root}")
        frames.append((name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt))
    return frames


def cluster_lut(label_set: str, void_cluster: str | int, overrides: dict[str, str] | None = None) -> np.ndarray:
    """Class id -> cluster id from the SLME table; void goes to ``void_cluster`` (a name, or IGNORE)."""
    table = load_table(label_set)
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[: table.num_classes] = table.cluster_of_class
    for name, cluster in (overrides or {}).items():
        lut[table.classes.index(name)] = CLUSTERS_6.index(cluster)
    void = LABEL_SETS[label_set].void_label
    lut[void] = CLUSTERS_6.index(void_cluster) if isinstance(void_cluster, str) else void_cluster
    return lut


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = GT class 0..n-1 (other GT values ignored), columns = predicted class.

    There is one extra last column for predictions outside 0..n-1 (void outputs): they
    are wrong for their GT class but belong to no predicted class.
    """
    valid = gt < num_classes
    pred = np.minimum(pred[valid], num_classes).astype(np.int64)
    counts = np.bincount(gt[valid].astype(np.int64) * (num_classes + 1) + pred,
                         minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class from ``confusion`` counts; NaN for a class neither in GT nor predicted."""
    n = conf.shape[0]
    tp = np.diag(conf[:, :n]).astype(np.float64)
    union = conf.sum(1) + conf[:, :n].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def segment_frames(segmenter: Segmenter, frames) -> tuple[list[np.ndarray], float]:
    """Predictions for all frames and the mean seconds per ``predict`` call."""
    preds, seconds = [], 0.0
    for _, rgb, _ in frames:
        t0 = time.perf_counter()
        preds.append(segmenter.predict(rgb))
        seconds += time.perf_counter() - t0
    return preds, seconds / len(frames)


def camvid_miou(preds, frames) -> tuple[float, list[float]]:
    num = LABEL_SETS["camvid"].void_label  # 11 real classes, 11 = Unlabelled ignored
    conf = sum(confusion(gt, pred, num) for pred, (_, _, gt) in zip(preds, frames))
    ious = iou_per_class(conf)
    return float(np.nanmean(ious)), [float(v) for v in ious]


def cluster_miou(preds, frames, pred_lut: np.ndarray) -> tuple[float, list[float]]:
    gt_lut = cluster_lut("camvid", IGNORE)
    conf = sum(confusion(gt_lut[gt], pred_lut[pred], len(CLUSTERS)) for pred, (_, _, gt) in zip(preds, frames))
    ious = iou_per_class(conf)
    return float(np.nanmean(ious)), [float(v) for v in ious]


def evaluate_camvid_weights(frames, size: tuple[int, int], label_set=None) -> dict:
    segmenter = Segmenter(SegmenterConfig(weights=espnet_weights("camvid"), size=size))
    if label_set is not None:
        segmenter.label_set = label_set
    preds, sec = segment_frames(segmenter, frames)
    miou, per_class = camvid_miou(preds, frames)
    # In-domain reference for the Cityscapes figures in (b).
    miou_6, _ = cluster_miou(preds, frames, cluster_lut("camvid", PREDICTED_VOID_CLUSTER))
    return {"size": list(size), "miou": miou, "per_class_iou": dict(zip(LABEL_SETS["camvid"].class_names, per_class)),
            "miou_6cluster": miou_6, "sec_per_frame": sec, "input_stats": segmenter.label_set.stats_source}


def evaluate_ade20k(frames) -> dict:
    segmenter = Segmenter(SegmenterConfig(segmenter="deeplab-ade20k", threads=torch.get_num_threads()))
    preds, sec = segment_frames(segmenter, frames)
    lut = cluster_lut("ade20k", PREDICTED_VOID_CLUSTER)
    miou, per_cluster = cluster_miou(preds, frames, lut)
    # Offset check: read the raw output channel (id + 1, other -> 0) as if it were the class id.
    void = LABEL_SETS["ade20k"].void_label
    channels = [(pred.astype(np.int64) + 1) % (void + 1) for pred in preds]
    miou_no_offset, _ = cluster_miou(channels, frames, lut)
    other = float(np.mean([np.mean(pred == void) for pred in preds]))
    return {"size": list(segmenter.size), "miou": miou, "per_cluster_iou": dict(zip(CLUSTERS, per_cluster)),
            "miou_without_label_offset": miou_no_offset, "predicted_other_fraction": other, "sec_per_frame": sec}


def save_ade20k_figure(path: Path, frame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structvpr_core.data.images import read_rgb

    name, rgb, gt = frame
    ade20k = Segmenter(SegmenterConfig(segmenter="deeplab-ade20k"))
    city = Segmenter(SegmenterConfig(weights=espnet_weights("cityscapes")))
    cluster_rgb = np.zeros((256, 3), np.uint8)
    cluster_rgb[: len(CLUSTERS)] = CLUSTER_COLOURS_RGB
    ade_lut, city_lut = cluster_lut("ade20k", PREDICTED_VOID_CLUSTER), cluster_lut("cityscapes", PREDICTED_VOID_CLUSTER)
    gt_lut = cluster_lut("camvid", IGNORE)
    data = shared_dir() / "data"
    others = [("Gardens Point night_right 060", read_rgb(data / "gardenspoint" / "night_right" / "Image060.jpg")),
              ("GRIEF michigan 0103 (session 1)", read_rgb(data / "grief_seasons" / "michigan" / "images" / "0103.jpg"))]
    panels = [("RGB " + name, rgb), ("CamVid GT -> clusters (black: unlabelled)", cluster_rgb[gt_lut[gt]]),
              ("DeepLab ADE20K -> clusters", cluster_rgb[ade_lut[ade20k.predict(rgb)]]),
              ("ESPNet Cityscapes -> clusters", cluster_rgb[city_lut[city.predict(rgb)]])]
    for title, image in others:
        panels += [(title, image), ("DeepLab ADE20K -> clusters", cluster_rgb[ade_lut[ade20k.predict(image)]])]
    fig, axes = plt.subplots(2, 4, figsize=(16, 5.6))
    for ax, (title, image) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        ax.imshow(image, interpolation="nearest")
    handles = [matplotlib.patches.Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(CLUSTERS, CLUSTER_COLOURS_RGB)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLUSTERS), fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=60))
    plt.close(fig)


def evaluate_cityscapes_weights(frames, size: tuple[int, int]) -> dict:
    segmenter = Segmenter(SegmenterConfig(weights=espnet_weights("cityscapes"), size=size))
    preds, sec = segment_frames(segmenter, frames)
    miou, per_cluster = cluster_miou(preds, frames, cluster_lut("cityscapes", PREDICTED_VOID_CLUSTER))
    miou_tg, _ = cluster_miou(preds, frames, cluster_lut("cityscapes", PREDICTED_VOID_CLUSTER, TERRAIN_AS_GROUND))
    return {"size": list(size), "miou": miou, "per_cluster_iou": dict(zip(CLUSTERS, per_cluster)),
            "miou_terrain_as_ground": miou_tg, "sec_per_frame": sec}


def save_figure(path: Path, frame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, rgb, gt = frame
    camvid, city = LABEL_SETS["camvid"], LABEL_SETS["cityscapes"]
    pred_camvid = Segmenter(SegmenterConfig(weights=espnet_weights("camvid"))).predict(rgb)
    pred_city = Segmenter(SegmenterConfig(weights=espnet_weights("cityscapes"))).predict(rgb)
    cluster_rgb = np.asarray(CLUSTER_COLOURS_RGB + ((0, 0, 0),), dtype=np.uint8)
    cluster_rgb = np.concatenate([cluster_rgb, np.zeros((256 - len(cluster_rgb), 3), np.uint8)])
    gt_lut = cluster_lut("camvid", IGNORE)
    gt_lut[gt_lut == IGNORE] = len(CLUSTERS)  # black
    panels = [
        ("RGB " + name, rgb),
        ("CamVid ground truth", camvid.colorize(gt)),
        ("ESPNet CamVid weights (480x360)", camvid.colorize(pred_camvid)),
        ("ESPNet Cityscapes weights (1024x512)", city.colorize(pred_city)),
        ("6 clusters (legend)", None),
        ("GT -> clusters", cluster_rgb[gt_lut[gt]]),
        ("CamVid pred -> clusters", cluster_rgb[cluster_lut("camvid", PREDICTED_VOID_CLUSTER)[pred_camvid]]),
        ("Cityscapes pred -> clusters",
         cluster_rgb[cluster_lut("cityscapes", PREDICTED_VOID_CLUSTER)[pred_city]]),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4))
    for ax, (title, image) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        if image is not None:
            ax.imshow(image, interpolation="nearest")
    legend = axes.flat[4]
    for i, (cluster, colour) in enumerate(zip(CLUSTERS + ("ignored (GT unlabelled)",), cluster_rgb)):
        legend.add_patch(matplotlib.patches.Rectangle((0.05, 0.85 - i * 0.13), 0.12, 0.09, color=colour / 255))
        legend.text(0.22, 0.895 - i * 0.13, cluster, va="center", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=60))
    plt.close(fig)


def print_table(results: dict) -> None:
    print(f"frames: {results['frames']}, CPU, torch threads: {results['torch_threads']}")
    print("\n(a) CamVid weights, 11-class mIoU on camvid_sample")
    print(f"  {'size':>9}  {'input stats':<12} {'mIoU':>6}  {'6-cluster':>9}  {'s/frame':>7}")
    rows = [(row, "camvid") for row in results["camvid_11class"]]
    for row, stats in rows + [(results["camvid_with_cityscapes_stats"], "cityscapes")]:
        print(f"  {'x'.join(map(str, row['size'])):>9}  {stats:<12} {100 * row['miou']:6.1f}  "
              f"{100 * row['miou_6cluster']:9.1f}  {row['sec_per_frame']:7.3f}")
    best = max(results["camvid_11class"], key=lambda r: r["miou"])
    print("  per class at " + "x".join(map(str, best["size"])) + ": "
          + ", ".join(f"{k} {100 * v:.0f}" for k, v in best["per_class_iou"].items()))
    print("\n(b) Cityscapes weights, 6-cluster mIoU (terrain -> vegetation; terrain -> ground in brackets)")
    for row in results["cityscapes_6cluster"]:
        print(f"  {'x'.join(map(str, row['size'])):>9}  {100 * row['miou']:6.1f} ({100 * row['miou_terrain_as_ground']:.1f})"
              f"  {row['sec_per_frame']:7.3f} s/frame")
    best = max(results["cityscapes_6cluster"], key=lambda r: r["miou"])
    print("  per cluster at " + "x".join(map(str, best["size"])) + ": "
          + ", ".join(f"{k} {100 * v:.0f}" for k, v in best["per_cluster_iou"].items()))
    ade = results["ade20k_6cluster"]
    print(f"\n(d) DeepLab ADE20K (TFLite, 513x513 letterboxed), 6-cluster mIoU: {100 * ade['miou']:.1f} "
          f"(without the label offset: {100 * ade['miou_without_label_offset']:.1f}), "
          f"{ade['sec_per_frame']:.2f} s/frame, predicted 'other' {100 * ade['predicted_other_fraction']:.2f}% of pixels")
    print("  per cluster: " + ", ".join(f"{k} {100 * v:.0f}" for k, v in ade["per_cluster_iou"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--figure", type=Path, default=None, help="also write the comparison PNG here")
    parser.add_argument("--ade20k-figure", type=Path, default=None, help="also write the ADE20K teacher PNG here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the timings (default 1: stable on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames = load_camvid_sample()
    camvid = LABEL_SETS["camvid"]
    with_city_stats = dataclasses.replace(camvid, mean_bgr=LABEL_SETS["cityscapes"].mean_bgr,
                                          std_bgr=LABEL_SETS["cityscapes"].std_bgr,
                                          stats_source=LABEL_SETS["cityscapes"].stats_source)
    results = {
        "frames": len(frames),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "camvid_11class": [evaluate_camvid_weights(frames, size) for size in CAMVID_SIZES],
        "camvid_with_cityscapes_stats": evaluate_camvid_weights(frames, camvid.native_size, with_city_stats),
        "cityscapes_6cluster": [evaluate_cityscapes_weights(frames, size) for size in CITYSCAPES_SIZES],
        "ade20k_6cluster": evaluate_ade20k(frames),
        "clusters": list(CLUSTERS),
        "cluster_tables": "structvpr_core/segmentation/slme_tables/{camvid_11,cityscapes_19,ade20k_150}.yaml",
        "predicted_void_cluster": PREDICTED_VOID_CLUSTER,
    }
    print_table(results)
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    if args.figure:
        save_figure(args.figure, load_camvid_sample([FIGURE_FRAME])[0])
        print(f"wrote {args.figure}")
    if args.ade20k_figure:
        save_ade20k_figure(args.ade20k_figure, load_camvid_sample([FIGURE_FRAME])[0])
        print(f"wrote {args.ade20k_figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
