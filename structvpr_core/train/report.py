"""Collect the test.json / partition summaries of a multi-seed experiment into one table + plot.

``structvpr train report --runs runs/nordland64 --out docs`` reads <runs>/seed*/<step>/test.json
(written by ``structvpr train test``) and <runs>/seed*/partition/summary.json; prints and writes
a markdown table (mean +- sample std over the seeds that exist, with the seed list per row) and
a bar chart. Missing runs are listed, never filled in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.train.partition import PAPER_RATIOS

# (label, step folder) in table order
ROWS = (
    ("RGB stage I", "stage1-rgb"),
    ("SEG-only (stage I seg)", "stage1-seg"),
    ("None (stage II, no KD)", "stage2-none"),
    ("KD-All (phi = 1)", "stage2-kd_all"),
    ("S1 only (GP-S 1-0)", "stage2-gps_s1"),
    ("GP-D 8-4-1-0", "stage2-gpd_8410"),
    ("GP-S phi' (Eq. 7)", "stage2-gps_phi"),
    ("GP-D phi (Eq. 4, ours)", "stage2-gpd_phi"),
    ("StructVPR++ GP-D phi (label features)", "stage2-plusplus_gpd_phi"),
)
METRICS = ("R@1", "R@5", "R@10", "hard_R@1", "hard_R@5", "hard_R@10")


def _seed_dirs(runs: Path, only: list[int] | None = None) -> dict[int, Path]:
    out = {}
    for d in sorted(runs.glob("seed*")):
        m = re.fullmatch(r"seed(\d+)", d.name)
        if m and d.is_dir() and (only is None or int(m.group(1)) in only):
            out[int(m.group(1))] = d
    if not out:
        raise FileNotFoundError(f"no seed*/ run folders under {runs}")
    return out


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def collect(runs: Path, only: list[int] | None = None) -> dict:
    seeds = _seed_dirs(runs, only)
    rows = []
    for label, step in ROWS:
        results = {}
        for seed, d in seeds.items():
            f = d / step / "test.json"
            if f.is_file():
                results[seed] = json.loads(f.read_text())
        rows.append({"label": label, "step": step, "seeds": sorted(results),
                     "epochs": {s: r["selected_epoch"] for s, r in results.items()},
                     "values": {m: [results[s]["test"][m] for s in sorted(results)] for m in METRICS}})
    ratios = {}
    for seed, d in seeds.items():
        f = d / "partition" / "summary.json"
        if f.is_file():
            ratios[seed] = json.loads(f.read_text())["ratios"]
    return {"rows": rows, "ratios": ratios, "seeds": sorted(seeds)}


def markdown(report: dict) -> str:
    lines = ["| arm | seeds (selected epoch) | R@1 | R@5 | R@10 | hard R@1 | hard R@5 | hard R@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        seeds = ", ".join(f"{s} (ep {r['epochs'][s]})" for s in r["seeds"]) or "not run"
        lines.append(f"| {r['label']} | {seeds} | " + " | ".join(_fmt(r["values"][m]) for m in METRICS) + " |")
    if report["ratios"]:
        lines += ["", "| group | " + " | ".join(f"seed {s}" for s in report["ratios"]) + " | paper (MSLS, Table 5) |",
                  "|---|" + "---|" * (len(report["ratios"]) + 1)]
        for g, paper in PAPER_RATIOS.items():
            lines.append(f"| {g} | " + " | ".join(f"{100 * v[g]:.2f}%" for v in report["ratios"].values())
                         + f" | {paper:.2f}% |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["seeds"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / 3
    for i, m in enumerate(("R@1", "R@5", "R@10")):
        means = [np.mean(r["values"][m]) for r in rows]
        stds = [np.std(r["values"][m], ddof=1) if len(r["values"][m]) > 1 else 0 for r in rows]
        ax.bar(np.arange(len(rows)) + (i - 1) * width, means, width, yerr=stds, capsize=2, label=m)
    ax.set_xticks(np.arange(len(rows)), [f"{r['label']}\n(n={len(r['seeds'])})" for r in rows], fontsize=7)
    ax.set_ylabel("test recall (%), soft GT"), ax.set_title(title), ax.legend(), ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def run_report(runs: Path, out: Path, name: str, seeds: list[int] | None = None) -> dict:
    report = collect(runs, seeds)
    text = markdown(report)
    print(text)
    atomic_write_text(out / f"{name}_table.md", text)
    atomic_write_text(out / f"{name}_results.json", json.dumps(report, indent=1))
    if any(r["seeds"] for r in report["rows"]):
        plot(report, out / f"{name}_recall.png", f"{name}: test recall (val-selected checkpoints)")
    return {"table": str(out / f"{name}_table.md")}


def label_summary(labels_root: Path, images_root: Path, label_set: str, out_png: Path,
                  examples: tuple[int, ...] = (5000, 12000, 20000, 26000)) -> dict:
    """What the teacher sees: class and SLME-cluster histograms of a label cache, per season,
    and a figure of a few places (image | label map, summer and winter)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structvpr_core.data.images import read_rgb
    from structvpr_core.segmentation.segment import LABEL_SETS
    from structvpr_core.segmentation.slme import CLUSTERS_6, load_table

    table = load_table(label_set)
    names = LABEL_SETS[label_set].class_names
    out: dict = {}
    for season in sorted(p.name for p in labels_root.iterdir() if p.is_dir()):
        files = sorted((labels_root / season).glob("*.png"))
        counts = np.zeros(256, np.int64)
        for f in files:
            counts += np.bincount(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).ravel(), minlength=256)
        total = counts.sum()
        classes = {names[i] if i < len(names) else str(i): float(counts[i] / total)
                   for i in np.argsort(-counts) if counts[i]}
        clusters = {c: 0.0 for c in (*CLUSTERS_6, "void")}
        for i, n in enumerate(counts[: len(names)]):
            key = CLUSTERS_6[table.cluster_of_class[i]] if i < table.num_classes else "void"
            clusters[key] += float(n / total)
        clusters["void"] += float(counts[len(names):].sum() / total)
        out[season] = {"images": len(files), "classes": classes, "clusters": clusters}
    seasons = list(out)
    fig, axes = plt.subplots(len(examples), 2 * len(seasons), figsize=(3 * len(seasons) * 2, 1.7 * len(examples)))
    for r, frame in enumerate(examples):
        for s, season in enumerate(seasons):
            name = f"images-{frame:05d}.png"
            lab = labels_root / season / name
            if not lab.is_file():
                continue
            axes[r, 2 * s].imshow(read_rgb(images_root / season / name))
            axes[r, 2 * s + 1].imshow(LABEL_SETS[label_set].colorize(cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)))
            axes[r, 2 * s].set_title(f"{season} {frame}", fontsize=7)
            axes[r, 2 * s + 1].set_title("labels", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
