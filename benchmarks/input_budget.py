"""Input pixel budget on VAL: R@1 vs pixels per model, encoder time per budget, and two-budget
multi-scale descriptors, all in one run (issue 18).

For every model and every budget N the val images (``benchmark.VAL_SETS``: nordland64 val,
Gardens Point val day_left / night_right -> day_right; GRIEF has no val split) are resized to
W x H ~ N at their own aspect (``runtime/input_rule.InputRule``), encoded on the benchmark's path
(ONNX Runtime fp32, 1 thread) and scored single image (soft and hard R@1/5/10, pooled per set, mean
over the sets). A model's own rule today (a checkpoint's fixed training size) is scored as well,
as the reference the budget must beat. The budget chosen per model is the one with the best val
mean soft R@1 (ties: the fewer pixels).

Multi-scale: for every pair of budgets a < b, the L2-normalised sum of the two descriptors,
scored the same way; its cost is the sum of the two encoder times.

Encoder time: median of ``--timing-repeats`` single-image ``encode`` calls (batch 1, 1 thread) on
one real Gardens Point frame (960x540), measured for every (model, budget) in this run, after a
warm-up call; read the ratios between budgets (the machine is shared and noisy).

    python benchmarks/input_budget.py --out benchmarks/results/input_budget_val.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from structvpr_core.data.images import read_rgb  # noqa: E402
from structvpr_core.evaluation.benchmark import (VAL_SETS, cached_descriptors, model_fingerprint,  # noqa: E402
                                                 network_input_size, score_set)
from structvpr_core.io_utils import atomic_write, atomic_write_text  # noqa: E402
from structvpr_core.models.shipped import DEFAULT_MODEL  # noqa: E402
from structvpr_core.paths import shared_dir  # noqa: E402
from structvpr_core.progress import progress  # noqa: E402
from structvpr_core.runtime.encoder import load_encoder  # noqa: E402
from structvpr_core.runtime.threads import set_compute_threads  # noqa: E402

BUDGETS = (12800, 28800, 51200, 76800, 115200, 172800, 307200)
MODELS = (DEFAULT_MODEL, "lite0_realres_none_seed2_whitened_fp16.pt", "imagenet-lite0", "imagenet-lite0-mc",
          "imagenet-mobilenetv2", "imagenet-lite2", "imagenet-lite2-mc")
TIMING_IMAGE = Path("gardenspoint/day_right/Image150.jpg")  # a val frame, 960x540


def mean_r1(rows: dict[str, dict], gt: str = "soft") -> float:
    return float(np.mean([r[gt]["recall@1"] for r in rows.values()]))


def score(loaded, descriptors: dict) -> dict[str, dict]:
    out = {}
    for name, place_sets in loaded.items():
        scored = score_set(place_sets, descriptors)
        scored.pop("top1_soft")
        out[name] = scored
    return out


def encoder_ms(encoder, image: np.ndarray, repeats: int) -> float:
    encoder.encode([image])  # warm-up: builds the graph of this size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode([image])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_model(spec: str, loaded, paths, budgets, cache_dir, timing_image, repeats, runtime) -> dict:
    rules = [("own", None)] + [(f"{n}", n) for n in budgets]
    per_rule, descs = {}, {}
    for label, pixels in progress(rules, desc=spec, unit="rule", leave=False):
        encoder = load_encoder(spec, "cpu", runtime=runtime, precision="fp32", input_pixels=pixels)
        if label == "own" and encoder.input_rule.pixels:
            continue  # the model's own rule is already a budget (a baseline): nothing older to compare
        desc, _ = cached_descriptors(encoder, model_fingerprint(encoder), paths, cache_dir, 16, label=f"{spec} {label}")
        descs[label] = dict(zip(paths, desc))
        per_rule[label] = {
            "input_rule": encoder.input_rule.describe(),
            "input_sizes": {name: list(network_input_size(encoder, ps[0].queries[0])) for name, ps in loaded.items()},
            "encoder_ms": encoder_ms(encoder, timing_image, repeats),
            "sets": score(loaded, descs[label]),
        }
        per_rule[label]["mean_r1_soft"] = mean_r1(per_rule[label]["sets"])
        per_rule[label]["mean_r1_hard"] = mean_r1(per_rule[label]["sets"], "hard")
    best = max(budgets, key=lambda n: (round(per_rule[str(n)]["mean_r1_soft"], 6), -n))
    multiscale = {}
    for a, b in itertools.combinations(budgets, 2):
        summed = {p: descs[str(a)][p] + descs[str(b)][p] for p in paths}
        summed = {p: v / np.linalg.norm(v) for p, v in summed.items()}
        sets = score(loaded, summed)
        multiscale[f"{a}+{b}"] = {"sets": sets, "mean_r1_soft": mean_r1(sets), "mean_r1_hard": mean_r1(sets, "hard"),
                                  "encoder_ms": per_rule[str(a)]["encoder_ms"] + per_rule[str(b)]["encoder_ms"]}
    best_ms = max(multiscale, key=lambda k: (round(multiscale[k]["mean_r1_soft"], 6), -multiscale[k]["encoder_ms"]))
    return {"rules": per_rule, "chosen_budget": best, "multiscale": multiscale, "best_multiscale": best_ms}


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    for spec, m in report["models"].items():
        budgets = [n for n in report["budgets"] if str(n) in m["rules"]]
        r1 = [100 * m["rules"][str(n)]["mean_r1_soft"] for n in budgets]
        line, = ax_r.plot(budgets, r1, "o-", label=Path(spec).stem)
        ax_t.plot(budgets, [m["rules"][str(n)]["encoder_ms"] for n in budgets], "o-", color=line.get_color(),
                  label=Path(spec).stem)
        if "own" in m["rules"]:
            own = m["rules"]["own"]
            ax_r.axhline(100 * own["mean_r1_soft"], color=line.get_color(), ls=":", lw=1)
        ax_r.plot([m["chosen_budget"]], [100 * m["rules"][str(m["chosen_budget"])]["mean_r1_soft"]], "*",
                  color=line.get_color(), ms=14)
    ax_r.set(xscale="log", xlabel="input pixels (W x H at the image's aspect)", ylabel="val mean R@1 soft (%)",
             title="R@1 over nordland64 val + Gardens Point val (2 conditions)\n"
                   "dotted: the checkpoint's fixed training size; star: chosen")
    ax_t.set(xscale="log", yscale="log", xlabel="input pixels", ylabel="encoder ms / image (960x540, batch 1, 1 thread)",
             title=f"encoder time, same run ({report['inference']})")
    for ax in (ax_r, ax_t):
        ax.grid(alpha=0.3, which="both")
    ax_r.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--runtime", default="onnxruntime", help="inference runtime (default onnxruntime, the node's auto)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing-repeats", type=int, default=9)
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "structvpr" / "benchmark")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/input_budget_val.json"))
    args = ap.parse_args()
    set_compute_threads(args.threads)
    data = shared_dir() / "data"
    loaded = {s.name: s.load(data) for s in VAL_SETS}
    paths = sorted({p for ps_list in loaded.values() for ps in ps_list for p in ps.database + ps.queries}, key=str)
    timing_image = read_rgb(data / TIMING_IMAGE)
    started = time.perf_counter()
    report = {"sets": list(loaded), "num_images": len(paths), "budgets": args.budgets, "threads": args.threads,
              "inference": f"{args.runtime} fp32, {args.threads} thread(s)", "timing_image": str(TIMING_IMAGE),
              "torch_threads": torch.get_num_threads(), "models": {}}
    for spec in args.models:
        report["models"][spec] = run_model(spec, loaded, paths, args.budgets, args.cache_dir, timing_image,
                                           args.timing_repeats, args.runtime)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")  # partial results survive a stop
        m = report["models"][spec]
        print(f"{spec}: chosen {m['chosen_budget']} px "
              f"(val R@1 {100 * m['rules'][str(m['chosen_budget'])]['mean_r1_soft']:.1f}); "
              f"best multi-scale {m['best_multiscale']} {100 * m['multiscale'][m['best_multiscale']]['mean_r1_soft']:.1f}",
              flush=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(f"\n| model | rule | " + " | ".join(n.split(" ", 1)[1] if " " in n else n for n in loaded) + " | mean R@1 | ms |")
    print("|---|---|" + "---:|" * (len(loaded) + 2))
    for spec, m in report["models"].items():
        for label, r in list(m["rules"].items()) + [(f"ms {k}", v) for k, v in m["multiscale"].items()
                                                     if k == m["best_multiscale"]]:
            cells = [f"{100 * r['sets'][n]['soft']['recall@1']:.1f}" for n in loaded]
            print(f"| {Path(spec).stem} | {label} | " + " | ".join(cells)
                  + f" | {100 * r['mean_r1_soft']:.1f} | {r['encoder_ms']:.1f} |")
    print(f"json: {args.out}  plot: {args.out.with_suffix('.png')}  ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
