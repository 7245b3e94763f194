"""Input pixel budget on VAL: R@1 vs pixels per model, encoder time per budget, and two-budget
multi-scale descriptors, all in one run (issue 18).

For every model and every budget N the val images (``benchmark.VAL_SETS``: nordland64 val,
Gardens Point val day_left / night_right -> day_right; GRIEF has no val split) are resized to
W x H ~ N at their own aspect (``runtime/input_rule.InputRule``), encoded on the benchmark's path
(ONNX Runtime fp32, 1 thread) and scored single image (soft and hard R@1/5/10, pooled per set, mean
over the sets). A model's own rule today (a checkpoint's fixed training size) is scored as well,
as the reference the budget must beat.

Multi-scale: for every pair of budgets a < b, the L2-normalised sum of the two descriptors,
scored the same way; its cost is the sum of the two.

Choice (per model, stated before the run): of all single budgets and pairs, the cheapest (fewest
pixels, a pair costs both) whose val mean soft R@1 is within ``TOLERANCE`` of the best one's. The
tolerance is one Gardens Point val query (25 per condition, 4 points each) in the mean over the 3
sets: differences below it are one query flipping, not resolvable. So a pair (the network run
twice) is adopted only if no cheaper configuration comes within one query of it.

Encoder time: after all encodings, every (model, budget) encoder is timed in one interleaved pass
(round-robin over the budgets, ``--timing-repeats`` rounds, median) on single-image ``encode``
calls (batch 1, 1 thread) of one real Gardens Point frame (960x540); read the ratios between
budgets (the machine is shared and noisy). A pair's time is the sum of its two budgets'.

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
TOLERANCE = 1 / 25 / 3  # one Gardens Point val query in the mean over the three val sets


def mean_r1(rows: dict[str, dict], gt: str = "soft") -> float:
    return float(np.mean([r[gt]["recall@1"] for r in rows.values()]))


def score(loaded, descriptors: dict) -> dict[str, dict]:
    out = {}
    for name, place_sets in loaded.items():
        scored = score_set(place_sets, descriptors)
        scored.pop("top1_soft")
        out[name] = scored
    return out


def interleaved_ms(encoders: dict[str, object], image: np.ndarray, repeats: int) -> dict[str, float]:
    """Median single-image encode time of each encoder, timed round-robin (noise hits all alike)."""
    for encoder in encoders.values():
        encoder.encode([image])  # warm-up: builds the graph of this size
    times = {label: [] for label in encoders}
    for _ in range(repeats):
        for label, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode([image])
            times[label].append(time.perf_counter() - start)
    return {label: 1000 * statistics.median(t) for label, t in times.items()}


def choose(configs: dict[str, dict]) -> str:
    """The cheapest configuration within TOLERANCE of the best val mean soft R@1 (ties: the fewer pixels)."""
    best = max(c["mean_r1_soft"] for c in configs.values())
    near = [k for k, c in configs.items() if c["mean_r1_soft"] >= best - TOLERANCE - 1e-9]
    return min(near, key=lambda k: (configs[k]["pixels"], -configs[k]["mean_r1_soft"]))


def run_model(spec: str, loaded, paths, budgets, cache_dir, runtime) -> tuple[dict, dict]:
    """Val scores of every budget (and the model's own older rule), pairs included; and the encoders."""
    rules = [("own", None)] + [(f"{n}", n) for n in budgets]
    per_rule, descs, encoders = {}, {}, {}
    for label, pixels in progress(rules, desc=spec, unit="rule", leave=False):
        encoder = load_encoder(spec, "cpu", runtime=runtime, precision="fp32", input_pixels=pixels)
        if label == "own" and encoder.input_rule.pixels:
            continue  # the model's own rule is already a budget (a baseline): nothing older to compare
        desc, _ = cached_descriptors(encoder, model_fingerprint(encoder), paths, cache_dir, 16, label=f"{spec} {label}")
        descs[label], encoders[label] = dict(zip(paths, desc)), encoder
        sizes = {name: network_input_size(encoder, ps[0].queries[0]) for name, ps in loaded.items()}
        per_rule[label] = {
            "input_rule": encoder.input_rule.describe(),
            "input_sizes": {name: list(wh) for name, wh in sizes.items()},
            "pixels": pixels or int(np.mean([w * h for w, h in sizes.values()])),
            "sets": score(loaded, descs[label]),
        }
        per_rule[label]["mean_r1_soft"] = mean_r1(per_rule[label]["sets"])
        per_rule[label]["mean_r1_hard"] = mean_r1(per_rule[label]["sets"], "hard")
    return summarise(per_rule, pair_scores(descs, loaded, paths, budgets), budgets), encoders


def pair_scores(descs, loaded, paths, budgets) -> dict[str, dict]:
    multiscale = {}
    for a, b in itertools.combinations(budgets, 2):
        summed = {p: descs[str(a)][p] + descs[str(b)][p] for p in paths}
        summed = {p: v / np.linalg.norm(v) for p, v in summed.items()}
        sets = score(loaded, summed)
        multiscale[f"{a}+{b}"] = {"sets": sets, "mean_r1_soft": mean_r1(sets), "mean_r1_hard": mean_r1(sets, "hard"),
                                  "pixels": a + b}
    return multiscale


def summarise(per_rule: dict, multiscale: dict, budgets) -> dict:
    configs = {**{str(n): per_rule[str(n)] for n in budgets}, **multiscale}
    return {"rules": per_rule, "multiscale": multiscale, "chosen": choose(configs),
            "best_single": choose({str(n): per_rule[str(n)] for n in budgets}),
            "best_multiscale": max(multiscale, key=lambda k: multiscale[k]["mean_r1_soft"])}


def timing_encoders(spec: str, budgets, runtime) -> dict:
    encoders = {str(n): load_encoder(spec, "cpu", runtime=runtime, precision="fp32", input_pixels=n) for n in budgets}
    own = load_encoder(spec, "cpu", runtime=runtime, precision="fp32")
    return encoders if own.input_rule.pixels else {"own": own, **encoders}


def reused(previous: dict, spec: str, budgets, loaded) -> dict:
    """Scores of ``spec`` from a previous run's JSON (same sets and budgets), without its times."""
    old = previous["models"][spec]
    if previous["sets"] != list(loaded) or previous["budgets"] != list(budgets):
        raise SystemExit(f"--reuse-scores: the previous run has other sets or budgets than this one")
    strip = lambda d: {k: {f: v for f, v in r.items() if f != "encoder_ms"} for k, r in d.items()}  # noqa: E731
    per_rule = strip(old["rules"])
    for label, r in per_rule.items():  # runs before the 'pixels' field: the mean input pixels over the sets
        r.setdefault("pixels", int(label) if label.isdigit()
                     else int(np.mean([w * h for w, h in r["input_sizes"].values()])))
    multiscale = strip(old["multiscale"])
    for pair, r in multiscale.items():
        r.setdefault("pixels", sum(map(int, pair.split("+"))))
    return summarise(per_rule, multiscale, budgets)


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
        best = m["best_single"]
        ax_r.plot([int(best)], [100 * m["rules"][best]["mean_r1_soft"]], "*", color=line.get_color(), ms=14)
        if "+" in m["chosen"]:  # a multi-scale pair chosen: plotted at its total pixels
            pair = m["multiscale"][m["chosen"]]
            ax_r.plot([pair["pixels"]], [100 * pair["mean_r1_soft"]], "D", color=line.get_color(), ms=8)
    ax_r.set(xscale="log", xlabel="input pixels (W x H at the image's aspect)", ylabel="val mean R@1 soft (%)",
             title="R@1 over nordland64 val + Gardens Point val (2 conditions)\n"
                   "dotted: the checkpoint's fixed training size; star: chosen single budget;\n"
                   "diamond: a multi-scale pair chosen (at its total pixels)")
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
    ap.add_argument("--reuse-scores", type=Path, metavar="JSON",
                    help="take the val scores from this earlier run's JSON (same sets and budgets) and only "
                         "choose and time again (descriptors depend on the models/ and runtime/ source, so a "
                         "code change there re-encodes everything otherwise)")
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
    all_encoders = {}
    previous = json.loads(args.reuse_scores.read_text()) if args.reuse_scores else None
    if previous:
        report["scores_from"] = str(args.reuse_scores)
    for spec in args.models:
        if previous:
            report["models"][spec] = reused(previous, spec, args.budgets, loaded)
            all_encoders[spec] = timing_encoders(spec, args.budgets, args.runtime)
        else:
            report["models"][spec], all_encoders[spec] = run_model(spec, loaded, paths, args.budgets, args.cache_dir,
                                                                   args.runtime)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")  # partial results survive a stop
        m = report["models"][spec]
        print(f"{spec}: chosen {m['chosen']}; best single {m['best_single']} "
              f"(val R@1 {100 * m['rules'][m['best_single']]['mean_r1_soft']:.1f}); best multi-scale "
              f"{m['best_multiscale']} {100 * m['multiscale'][m['best_multiscale']]['mean_r1_soft']:.1f}", flush=True)
    for spec, encoders in progress(all_encoders.items(), desc="timing", unit="model"):
        m = report["models"][spec]
        for label, ms in interleaved_ms(encoders, timing_image, args.timing_repeats).items():
            m["rules"][label]["encoder_ms"] = ms
        for pair, r in m["multiscale"].items():
            a, b = pair.split("+")
            r["encoder_ms"] = m["rules"][a]["encoder_ms"] + m["rules"][b]["encoder_ms"]
        all_encoders[spec] = None  # free the exported graphs
    report["wall_s"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(f"\n| model | rule | " + " | ".join(n.split(" ", 1)[1] if " " in n else n for n in loaded) + " | mean R@1 | ms |")
    print("|---|---|" + "---:|" * (len(loaded) + 2))
    for spec, m in report["models"].items():
        for label, r in list(m["rules"].items()) + [(f"ms {k}", v) for k, v in m["multiscale"].items()
                                                     if k in (m["best_multiscale"], m["chosen"])]:
            cells = [f"{100 * r['sets'][n]['soft']['recall@1']:.1f}" for n in loaded]
            mark = " (chosen)" if label.removeprefix("ms ") == m["chosen"] else ""
            print(f"| {Path(spec).stem} | {label}{mark} | " + " | ".join(cells)
                  + f" | {100 * r['mean_r1_soft']:.1f} | {r['encoder_ms']:.1f} |")
    print(f"json: {args.out}  plot: {args.out.with_suffix('.png')}  ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
