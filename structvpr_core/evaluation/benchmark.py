"""``structvpr benchmark``: every model on every evaluation set, one table.

Sets (``EVAL_SETS``, the one place they are declared; ``VAL_SETS`` their val splits): nordland64
test (winter queries -> summer database), Gardens Point test (day_left -> day_right:
viewpoint; night_right -> day_right: day/night; both against the same day database) and
GRIEF stromovka across seasons (every monthly session in turn the database, the other 11
its queries; michigan is training data, see ``GRIEF_SPLITS``).

Resolution: every model sees every image by its own input rule (``runtime/input_rule.py``), as
``eval``, ``build-map`` and the node do: the shipped default and the network baselines resize to a
pixel budget at the image's aspect (chosen on val: ``VAL_SETS``, benchmarks/input_budget.py,
docs/input_budget.md), checkpoints from before the rule squeeze every image to their training size.
nordland64's 64x32 frames are therefore upsampled to the budget. raw-pixel always uses its own fixed
64x32 patch-normalised grid. ``input_pixels`` forces one budget on every network (the val sweep).

Descriptors are cached per (model fingerprint: weights, name, input rule, inference path and the
source of structvpr_core/models and runtime; image list of the sets) as .npy,
so a re-run only encodes what changed. Recall@N is pooled over a
set's place sets (weighted by their queries); R@N soft and hard (hard = exact frame on aligned sets; equal to soft on
GRIEF, whose ground truth is exact by place). With 5 places in a GRIEF database, R@5 and
R@10 are 1 by construction there: read R@1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structvpr_core.arguments import CliError, parse_size
from structvpr_core.data.datasets import PlaceSet, gardenspoint, grief_seasons, nordland64
from structvpr_core.evaluation.metrics import recall_at_n
from structvpr_core.io_utils import atomic_write, atomic_write_text
from structvpr_core.paths import REPO_ROOT, shared_dir
from structvpr_core.evaluation.evaluate import retrieve
from structvpr_core.evaluation.feature_cache import cached_features
from structvpr_core.evaluation.mission_benchmark import missions_table
from structvpr_core.evaluation.rerank_eval import reranked_recall_at_1
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.loop_closure.geometry import GeometryConfig
from structvpr_core.retrieval.sequence import SequenceConfig, normalization_for
from structvpr_core.runtime.encoder import BASELINES, Encoder, encode_paths, load_encoder, resolve_model
from structvpr_core.runtime.options import add_inference_arguments

KS = (1, 5, 10)
GROUND_TRUTHS = ("soft", "hard")
SHIPPED_CHECKPOINTS = REPO_ROOT / "training" / "checkpoints"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # structvpr_core/
DESCRIPTOR_SOURCE_PACKAGES = ("models", "runtime")


@dataclass(frozen=True)
class EvalSet:
    name: str
    load: Callable[[Path], list[PlaceSet]]  # shared data root -> place sets, recall pooled over them
    sequential: bool  # queries and database are traversals in travel order: sequence matching applies


EVAL_SETS = (
    EvalSet("nordland64 winter->summer", lambda data: [nordland64(data / "nordland64", "test")], True),
    EvalSet("gardenspoint day_left->day_right",
            lambda data: [gardenspoint(data / "gardenspoint", "test", "day_right", "day_left")], True),
    EvalSet("gardenspoint night_right->day_right",
            lambda data: [gardenspoint(data / "gardenspoint", "test", "day_right", "night_right")], True),
    EvalSet("grief stromovka seasons", lambda data: grief_seasons(data / "grief_seasons", "test"), False),
)
# Where defaults are chosen (input budgets, multi-scale, trunks): the val splits of the same sets.
# GRIEF has none (5 places per site, split by site: michigan trains, stromovka tests; datasets.py).
VAL_SETS = (
    EvalSet("nordland64 val winter->summer", lambda data: [nordland64(data / "nordland64", "val")], True),
    EvalSet("gardenspoint val day_left->day_right",
            lambda data: [gardenspoint(data / "gardenspoint", "val", "day_right", "day_left")], True),
    EvalSet("gardenspoint val night_right->day_right",
            lambda data: [gardenspoint(data / "gardenspoint", "val", "day_right", "night_right")], True),
)


def default_models() -> list[str]:
    """Every baseline the encoder knows and every shipped checkpoint (relative paths: they go in docs)."""
    return list(BASELINES) + [os.path.relpath(p) for p in sorted(SHIPPED_CHECKPOINTS.glob("*.pt"))]


def model_fingerprint(encoder: Encoder) -> str:
    """What the descriptors depend on: the encoder's kind, name, size, network weights, and the
    source of every module that defines networks or runs them (models/, runtime/: layers,
    padding hooks, preprocessing, pooling, ONNX export), so a fix there never reads stale
    descriptors from the cache."""
    h = hashlib.sha256(f"{type(encoder).__name__}|{encoder.name}|{encoder.dim}".encode())
    model = getattr(encoder, "model", None)
    for package in DESCRIPTOR_SOURCE_PACKAGES:
        for source in sorted((PACKAGE_ROOT / package).glob("*.py")):
            h.update(f"{package}/{source.name}".encode())
            h.update(source.read_bytes())
    if isinstance(model, torch.nn.Module):  # the weights themselves: checkpoint, random init or ImageNet
        for key, tensor in model.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    rule = getattr(encoder, "input_rule", None)
    h.update((rule.describe() if rule is not None else str(getattr(encoder, "size", ""))).encode())
    path = getattr(encoder, "path", None)  # runtime x precision: bf16 descriptors are not fp32's
    if path is not None:
        h.update(path.describe().encode())
    return h.hexdigest()


def cached_descriptors(encoder: Encoder, fingerprint: str, paths: list[Path], cache_dir: Path | None,
                       batch_size: int, label: str = "") -> tuple[np.ndarray, bool]:
    """Descriptors of ``paths`` (one row each), from the cache when this exact job ran before."""
    key = hashlib.sha256("\n".join([fingerprint, *map(str, paths)]).encode()).hexdigest()[:24]
    cache_file = cache_dir / f"{key}.npy" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        cached = np.load(cache_file)
        if cached.shape == (len(paths), encoder.dim):
            return cached, True
    desc = encode_paths(encoder, paths, batch_size, desc=f"encoding {label}")
    if cache_file is not None:
        atomic_write(cache_file, lambda tmp: _save_npy(tmp, desc))
    return desc, False


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to the temp name
        np.save(f, array)


def score_set(place_sets: list[PlaceSet], desc: dict[Path, np.ndarray], sequence: SequenceConfig | None = None) -> dict:
    """Recall@KS soft and hard, pooled over ``place_sets`` (weighted by evaluated queries), and
    ``top1_soft``: each evaluated query's soft top-1 hit ("1"/"0", place-set order), for paired comparisons."""
    hits = {gt: np.zeros(len(KS)) for gt in GROUND_TRUTHS}
    counts = dict.fromkeys(GROUND_TRUTHS, 0)
    top1 = []
    for ps in place_sets:
        db = np.stack([desc[p] for p in ps.database])
        q = np.stack([desc[p] for p in ps.queries])
        ranked = retrieve(q, db, max(KS), sequence=sequence)[1]
        for gt, positives in (("soft", ps.positives), ("hard", ps.hard_positives)):
            recall = recall_at_n(ranked, positives, KS)
            hits[gt] += recall.num_evaluated * np.array([recall.recalls[k] for k in KS])
            counts[gt] += recall.num_evaluated
            if gt == "soft":
                top1 += ["1" if rank == 0 else "0" for rank in recall.first_hit_ranks]
    return {
        **{gt: {**{f"recall@{k}": float(hits[gt][i] / counts[gt]) for i, k in enumerate(KS)},
                "num_evaluated": counts[gt]}
           for gt in GROUND_TRUTHS},
        "top1_soft": "".join(top1),
    }


def paired_difference(results: list[dict], model: str, reference: str, length: int = 1,
                      rounds: int = 2000, seed: int = 0) -> dict:
    """Mean-over-sets R@1 (soft) of ``model`` minus ``reference``, with a 95 % paired bootstrap
    interval: each round resamples every set's queries (the same draw for both models).

    Queries of one set are not independent (GRIEF's 660 are 5 places seen 132 times; a
    sequence's neighbours look alike), so the interval is a lower bound on the uncertainty.
    """
    rng = np.random.default_rng(seed)
    per_set = []
    for r in results:
        if r["model"] != model or r["sequence_length"] != length:
            continue
        ref = next(x for x in results if x["model"] == reference and x["set"] == r["set"]
                   and x["sequence_length"] == length)
        a = np.frombuffer(r["top1_soft"].encode(), np.uint8) - ord("0")
        b = np.frombuffer(ref["top1_soft"].encode(), np.uint8) - ord("0")
        per_set.append(a.astype(np.float64) - b)
    observed = np.mean([d.mean() for d in per_set])
    rounds_mean = np.mean([d[rng.integers(0, len(d), (rounds, len(d)))].mean(axis=1) for d in per_set], axis=0)
    low, high = np.percentile(rounds_mean, [2.5, 97.5])
    return {"model": model, "reference": reference, "sequence_length": length, "difference": float(observed),
            "ci95": [float(low), float(high)], "rounds": rounds}


def network_input_size(encoder: Encoder, image: Path) -> tuple[int, int]:
    """(W, H) the encoder feeds its network for ``image`` (raw-pixel: its grid)."""
    rule = getattr(encoder, "input_rule", None)
    if rule is None:
        return tuple(encoder.size)
    from structvpr_core.data.images import read_rgb

    rgb = read_rgb(image)
    return rule.size_for(rgb.shape[1], rgb.shape[0])


def mean_over_sets(rows: list[dict]) -> dict:
    return {gt: {f"recall@{k}": float(np.mean([r[gt][f"recall@{k}"] for r in rows])) for k in KS}
            for gt in GROUND_TRUTHS}


def run_benchmark(models: list[str], eval_sets=EVAL_SETS, sequence_lengths=(1,), data_root: Path | None = None,
                  cache_dir: Path | None = None, device: str = "cpu", batch_size: int = 16,
                  runtime: str = "auto", precision: str = "fp32", reference: str | None = None,
                  input_pixels: int | None = None, input_size: tuple[int, int] | None = None,
                  rerank: GeometryConfig | None = None, log: Callable[[str], None] = print) -> dict:
    """Evaluate every model (by its own input rule, or for the networks the budget ``input_pixels`` or
    the fixed ``input_size``)
    on every set (and sequence length where the set is sequential); with ``reference`` (one of
    ``models``) also every other model's paired difference to it.

    All sets are encoded together, so an image they share (gardenspoint's day_right database) is
    encoded once per model. With ``rerank`` (the node's verification settings) single-image rows
    also get R@1 with the top 5 re-ranked by inliers.
    """
    data_root = data_root or shared_dir() / "data"
    loaded = {s.name: s.load(data_root) for s in eval_sets}
    paths = sorted({p for n in loaded for ps in loaded[n] for p in ps.database + ps.queries}, key=str)
    features, inliers_cache = {}, {}
    if rerank is not None:  # local features do not depend on the model: extracted once, at native size
        features = dict(zip(paths, cached_features(paths, rerank, cache_dir, label="benchmark sets")))
    results, encodings = [], []
    for m, spec in enumerate(models, start=1):
        network = spec != "raw-pixel"
        encoder = load_encoder(spec, device=device, runtime=runtime, precision=precision,
                               input_pixels=input_pixels if network else None, input_size=input_size if network else None)
        start = time.perf_counter()
        desc, was_cached = cached_descriptors(encoder, model_fingerprint(encoder), paths, cache_dir,
                                              batch_size, label=f"{len(eval_sets)} sets")
        seconds = time.perf_counter() - start
        log(f"[model {m}/{len(models)}] {encoder.name} on {len(eval_sets)} sets: {len(paths)} images, "
            f"{'cached' if was_cached else f'encoded in {seconds:.1f} s'}")
        path, rule = getattr(encoder, "path", None), getattr(encoder, "input_rule", None)
        encodings.append({"model": spec, "input_rule": rule.describe() if rule else "64x32 grid",
                          "num_images": len(paths), "inference": path.describe() if path else "numpy",
                          "cached": was_cached, "seconds": round(seconds, 2)})
        descriptors = dict(zip(paths, desc))
        for s in eval_sets:
            for length in sequence_lengths:
                if length > 1 and not s.sequential:
                    continue
                results.append({"model": spec, "encoder": encoder.name, "set": s.name,
                                "resolution": list(network_input_size(encoder, loaded[s.name][0].queries[0])),
                                "sequence_length": length,
                                **score_set(loaded[s.name], descriptors,
                                            SequenceConfig(length=length, normalization=normalization_for(spec)))})
                if rerank is not None and length == 1:
                    results[-1]["reranked"] = reranked_recall_at_1(loaded[s.name], descriptors,
                                                                   features, rerank, inliers_cache=inliers_cache)
    means = []
    for spec in models:
        for length in sequence_lengths:
            rows = [r for r in results if r["model"] == spec and r["sequence_length"] == length]
            means.append({"model": spec, "encoder": rows[0]["encoder"], "sequence_length": length,
                          "sets": [r["set"] for r in rows], **mean_over_sets(rows)})
    differences = [paired_difference(results, spec, reference, length)
                   for spec in models if reference is not None and spec != reference for length in sequence_lengths]
    return {"sets": [{"name": s.name, "sequential": s.sequential} for s in eval_sets],
            "models": models, "sequence_lengths": list(sequence_lengths), "results": results,
            "means": means, "reference": reference, "differences": differences, "encodings": encodings}


# ----------------------------------------------------------------------------- report


def model_labels(report: dict) -> dict[str, str]:
    """Model spec -> its label: the encoder's name, or the spec itself where names collide
    (every training run's checkpoint is called best.pt)."""
    names = {r["model"]: r["encoder"] for r in report["means"]}
    counts = {n: list(names.values()).count(n) for n in names.values()}
    return {spec: name if counts[name] == 1 else spec for spec, name in names.items()}


def markdown_table(report: dict) -> str:
    """One table: a block of rows per set (one per model), then the mean over sets."""
    label = model_labels(report)
    with_length = len(report["sequence_lengths"]) > 1
    cols = ["set", "model", "input"] + (["seq"] if with_length else []) + [
        f"R@{k} {gt}" for gt in GROUND_TRUTHS for k in KS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * 3 + ("---:|" if with_length else "")
             + "---:|" * (len(cols) - 3 - with_length)]

    def row(set_label, r):
        size = f"{r['resolution'][0]}x{r['resolution'][1]}" if "resolution" in r else ""
        cells = [set_label, label[r["model"]], size] + ([str(r["sequence_length"])] if with_length else [])
        cells += [f"{100 * r[gt][f'recall@{k}']:.1f}" for gt in GROUND_TRUTHS for k in KS]
        return "| " + " | ".join(cells) + " |"

    for s in report["sets"]:
        for r in report["results"]:
            if r["set"] == s["name"]:
                lines.append(row(s["name"], r))
    for r in report["means"]:
        lines.append(row(f"**mean over {len(r['sets'])} sets**", r))
    if report.get("differences"):
        lines += ["", f"Mean R@1 soft over the sets minus {label[report['reference']]}'s, in points, with a 95 % "
                      "paired bootstrap interval (every set's queries resampled, the same draw for both models; "
                      "queries of a set are correlated, so the true uncertainty is larger):", "",
                  "| model" + (" | seq" if with_length else "") + " | difference | 95 % interval |",
                  "|---" + ("|---:" if with_length else "") + "|---:|---:|"]
        for d in report["differences"]:
            lines.append(f"| {label[d['model']]}" + (f" | {d['sequence_length']}" if with_length else "")
                         + f" | {100 * d['difference']:+.1f} | [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] |")
    return "\n".join(lines)


def reranked_table(report: dict) -> str:
    """Single-image R@1 soft, global vs the top 5 re-ranked by verified inliers, per set and the mean."""
    label = model_labels(report)
    rows = [r for r in report["results"] if "reranked" in r]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    lines = ["### Single image, top 5 re-ranked by the node's verification (XFeat inliers)", "",
             "R@1 soft in %, global -> re-ranked (`structvpr_core/evaluation/rerank_eval.py`; frames under the "
             "node's min_image_pixels, nordland64's 64x32, cannot be verified and keep the global order).", "",
             "| model | " + " | ".join(sets) + " | mean | gain |", "|---|" + "---:|" * (len(sets) + 2)]
    for spec in dict.fromkeys(r["model"] for r in rows):
        mine = {r["set"]: r["reranked"] for r in rows if r["model"] == spec}
        g = np.mean([mine[s]["recall@1_global"] for s in sets])
        rr = np.mean([mine[s]["recall@1_reranked"] for s in sets])
        cells = [f"{100 * mine[s]['recall@1_global']:.1f} -> {100 * mine[s]['recall@1_reranked']:.1f}" for s in sets]
        lines.append(f"| {label[spec]} | " + " | ".join(cells) + f" | {100 * g:.1f} -> {100 * rr:.1f} | "
                     f"{100 * (rr - g):+.1f} |")
    return "\n".join(lines)


def plot_bars(report: dict, path: Path) -> Path:
    """Grouped bars of R@1 (soft and hard) per set and the mean, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [s["name"] for s in report["sets"]] + ["mean"]
    labels = model_labels(report)
    single = [r for r in report["results"] if r["sequence_length"] == 1]
    means = [r for r in report["means"] if r["sequence_length"] == 1]
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 1.6 * len(groups) * max(1, len(means)) / 3), 7), dpi=110)
    width = 0.8 / max(1, len(means))
    for ax, gt in zip(axes, GROUND_TRUTHS):
        for i, mean in enumerate(means):
            values = [next(r[gt]["recall@1"] for r in single if r["model"] == mean["model"] and r["set"] == g)
                      for g in groups[:-1]] + [mean[gt]["recall@1"]]
            ax.bar(np.arange(len(groups)) + (i - (len(means) - 1) / 2) * width, 100 * np.array(values),
                   width, label=labels[mean["model"]])
        ax.set_xticks(np.arange(len(groups)), [g.replace(" ", "\n", 1) for g in groups], fontsize=8)
        ax.set(ylabel=f"R@1 {gt} (%)", ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- CLI


README = """R@N in %; soft / hard ground truth: nordland64 +-1 file / same frame, gardenspoint +-2 frames /
same frame, GRIEF same place (soft = hard). Every model sees the images by its own input rule (column
"input": the network input size of the set's images; a pixel budget at the image's aspect for the
default model and the network baselines, chosen on val in `docs/input_budget.md`; raw-pixel always
uses its own 64x32 grid). Sets and protocols are declared and justified in
`structvpr_core/evaluation/benchmark.py`:

- nordland64 test (frames 29000..35760): 677 winter queries against the summer database.
- gardenspoint test (frames 175..199): 25 day_left (viewpoint) or night_right (day/night) queries
  against the day_right database; one query is 4 points.
- grief stromovka (michigan is training data): each of the 12 monthly sessions in turn is the
  database (5 places), the other 11 sessions are queries; 660 queries pooled. R@5 and R@10 are
  100 by construction there (5 places); they also lift the mean's R@5/R@10 equally for all models.
"""


# the trained students' yardstick (issue 7): the off-the-shelf ImageNet trunk
DEFAULT_REFERENCE = "imagenet-lite0"
# fp32 by default: the scoreboard compares models, not inference paths (those: docs/benchmark_paths.md)
DEFAULT_PATH = {"runtime": "auto", "precision": "fp32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", metavar="SPEC",
                        help=f"checkpoints (paths or shipped bare names) and/or baselines ({' | '.join(BASELINES)}); "
                             f"default: every baseline and every training/checkpoints/*.pt")
    parser.add_argument("--sets", nargs="+", metavar="NAME", choices=[s.name for s in EVAL_SETS],
                        help="evaluate only these sets (default: all): " + "; ".join(s.name for s in EVAL_SETS))
    parser.add_argument("--sequence-lengths", default="1", metavar="L1,L2,...",
                        help="query sequence lengths, e.g. 1,5,10,20 (default 1 = single images); L > 1 matches the "
                             "last L queries as a sequence on the sets recorded as traversals (not GRIEF)")
    parser.add_argument("--no-rerank", action="store_true",
                        help="skip the single-image R@1 with the top 5 re-ranked by the node's verification "
                             "(XFeat inliers; features extracted once per image and cached)")
    parser.add_argument("--missions", choices=("test", "val", "all", "none"), default="test",
                        help="also play the SLAM-style missions of this split (evaluation/missions.py) through the "
                             "loop-closure detector at the node's defaults, every model at its own input size "
                             "(default test; none = skip)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark.md"),
                        help="Markdown table; the JSON and the bar plot go beside it (.json, .png)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "structvpr" / "benchmark",
                        help="descriptor cache folder (default ~/.cache/structvpr/benchmark)")
    parser.add_argument("--no-cache", action="store_true", help="encode everything afresh, write no cache")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, metavar="SPEC",
                        help="report every other model's paired difference to this one (one of --models; "
                             f"default {DEFAULT_REFERENCE} when evaluated; 'none' = no comparison)")
    parser.add_argument("--resize", metavar="WxH",
                        help="force this input size on every network model (default: each model's own input rule)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16)
    add_inference_arguments(parser, precision=DEFAULT_PATH["precision"])


MISSIONS_README = """### Missions: loop closures at the node's defaults (mapping mode)

One run that revisits places (`structvpr_core/evaluation/missions.py`); every query counts, and a
query of a new place that publishes anything is a false positive. recall@100%P and PR-AUC sweep the
final score (inliers with verification); *published* is what the node's shipped defaults
(`config/structvpr.yaml`) put out: that column must read 0 wrong. Each model runs at its own
input size, as in the node; local features and the rules are the same for every model.
"""


def mission_rows(models: list[str], args: argparse.Namespace, data_root: Path) -> list[dict]:
    """Every model through the chosen split's missions at the node's defaults (descriptors cached)."""
    from structvpr_core.evaluation.mission_benchmark import run_missions
    from structvpr_core.evaluation.missions import missions

    cache_dir = None if args.no_cache else args.cache_dir
    current: dict[str, Encoder] = {}  # one model's encoder at a time: each holds a runtime per input size

    def encode(spec: str, paths: list[Path]) -> np.ndarray:
        if spec not in current:
            current.clear()
            current[spec] = load_encoder(spec, device=args.device, runtime=args.runtime, precision=args.precision)
        encoder = current[spec]
        return cached_descriptors(encoder, model_fingerprint(encoder), paths, cache_dir, args.batch_size)[0]

    return run_missions(models, missions(None if args.missions == "all" else args.missions), data_root, encode,
                        cache_dir=cache_dir)


def parse_sequence_lengths(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise CliError(f"--sequence-lengths must be comma-separated integers, e.g. 1,5,10, got {text!r}") from None
    if not lengths or min(lengths) < 1 or len(set(lengths)) != len(lengths):
        raise CliError(f"--sequence-lengths must be distinct integers >= 1, got {text!r}")
    return lengths


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    lengths = parse_sequence_lengths(args.sequence_lengths)
    models = args.models or default_models()
    for spec in models:
        resolve_model(spec)  # FileNotFoundError naming it, before any work
    if args.reference == "none" or (args.reference == DEFAULT_REFERENCE and DEFAULT_REFERENCE not in models):
        reference = None
    elif args.reference in models:
        reference = args.reference
    else:
        raise CliError(f"--reference {args.reference!r} is not one of the evaluated models: {models}")
    eval_sets = [s for s in EVAL_SETS if args.sets is None or s.name in args.sets]
    start = time.perf_counter()
    try:
        size = parse_size(args.resize)
    except ValueError as e:
        raise CliError(f"--resize: {e}") from None
    report = run_benchmark(models, eval_sets, lengths, cache_dir=None if args.no_cache else args.cache_dir,
                           device=args.device, batch_size=args.batch_size, runtime=args.runtime,
                           precision=args.precision, reference=reference, input_size=size,
                           rerank=None if args.no_rerank else LoopClosureConfig().geometry)
    if args.missions != "none":
        report["missions"] = mission_rows(models, args, data_root=shared_dir() / "data")
    report["wall_s"] = round(time.perf_counter() - start, 1)
    table = markdown_table(report)
    if any("reranked" in r for r in report["results"]):
        table += "\n\n" + reranked_table(report)
    if report.get("missions"):
        table += "\n\n" + MISSIONS_README + "\n" + missions_table(report["missions"], model_labels(report))
    print(table)
    json_path, png_path = args.out.with_suffix(".json"), args.out.with_suffix(".png")
    plot_bars(report, png_path)
    command = " ".join(["structvpr benchmark"] + (["--models", *args.models] if args.models else [])
                       + (["--sets", *(f"'{n}'" for n in args.sets)] if args.sets else [])
                       + ([f"--sequence-lengths {args.sequence_lengths}"] if lengths != (1,) else [])
                       + ([f"--reference {args.reference}"] if args.reference != DEFAULT_REFERENCE else [])
                       + ([f"--missions {args.missions}"] if args.missions != "test" else [])
                       + (["--no-rerank"] if args.no_rerank else [])
                       + ([f"--resize {args.resize}"] if args.resize else [])
                       + [f"--{k} {getattr(args, k)}" for k in ("runtime", "precision")
                          if getattr(args, k) != DEFAULT_PATH[k]])
    encoded = sum(e["num_images"] for e in report["encodings"] if not e["cached"])
    total = sum(e["num_images"] for e in report["encodings"])
    atomic_write_text(args.out, f"# Benchmark\n\nMade by `{command}` in {report['wall_s']} s; {encoded} of "
                      f"{total} image encodings computed, the others read from the descriptor cache."
                      f"\n\n{README}\n{table}\n\n"
                      f"![R@1]({png_path.name})\n")
    atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    print(f"table: {args.out}  json: {json_path}  plot: {png_path}  ({report['wall_s']} s)")
    return 0
