"""``structvpr eval``: Recall@N and precision-recall of a model or baseline on a place set.

Database and query images are encoded, every query retrieves its top-K database
images from a ``DescriptorIndex`` and the ranks are scored against the place
set's ground truth (metric definitions: ``metrics.py``). On aligned-folder data
(Nordland) both the soft (neighbouring frames) and the hard (exact frame) ground
truth are reported; elsewhere they coincide and only 'soft' is reported.

``evaluate_place_set`` is the reusable core (training uses it for validation).

``--sequence-length L`` (> 1) ranks the database by sequence score instead
(``structvpr_core.retrieval.sequence``): queries and database are taken in their
recorded order (file-name order: frame numbers for Nordland), each query's sequence
is itself and the L - 1 queries before it, and the PR curve sweeps the sequence score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from structvpr_core.arguments import (CliError, add_sequence_arguments, parse_frame_range, parse_size,
                                sequence_config_from_args)
from structvpr_core.data.datasets import NORDLAND64_SPLITS, PlaceSet, aligned_folders, csv_poses, nordland64, utm_folders
from structvpr_core.runtime.encoder import BASELINES, Encoder, encode_paths, load_encoder, resolve_model
from structvpr_core.runtime.options import add_inference_arguments
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write_text, file_sha256
from structvpr_core.evaluation.metrics import pr_auc, pr_curve, plot_pr, recall_at_100_precision, recall_at_n
from structvpr_core.paths import shared_dir
from structvpr_core.retrieval.index import DescriptorIndex, IndexConfig
from structvpr_core.retrieval.sequence import SequenceConfig, ranked_by_sequence

DEFAULT_KS = (1, 5, 10, 20)


# ----------------------------------------------------------------------------- core


def retrieve(q_desc: np.ndarray, db_desc: np.ndarray, k: int, index_config: IndexConfig | None = None,
             sequence: SequenceConfig | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-``k`` database positions per query: ``(scores, ids, kind)``, best first.

    Sequences of ``sequence.length`` > 1 queries are ranked by the node's causal matcher (exact);
    otherwise single images through a ``DescriptorIndex`` (``index_config``, default flat).
    """
    if sequence is not None and sequence.length > 1:
        scores, ids = ranked_by_sequence(q_desc, db_desc, sequence, k)
        return scores, ids, "sequence"
    index = DescriptorIndex(db_desc.shape[1], index_config or IndexConfig())
    index.train(db_desc)
    index.add(db_desc, np.arange(len(db_desc)))  # id = database position
    scores, ids = index.search(q_desc, k)
    return scores, ids, index.kind


def evaluate_place_set(
    encoder: Encoder,
    place_set: PlaceSet,
    ks: Sequence[int] = DEFAULT_KS,
    index_config: IndexConfig | None = None,
    batch_size: int = 32,
    sequence: SequenceConfig | None = None,
) -> dict:
    """Encode, retrieve top-max(ks), score. Returns a JSON-ready dict.

    ``sequence`` with length > 1: rank by sequence score (flat, exact) instead of the index.

    ``result["soft"]["recall@5"]`` etc.; ``result["hard"]`` only when the hard ground
    truth differs from the soft one. ``pr_curves`` holds the curve points for plots.
    """
    ks = sorted({int(k) for k in ks})
    index_config = index_config or IndexConfig()
    if index_config.kind == "ivfpq" and len(place_set.database) < index_config.min_train_vectors:
        # say so before spending minutes on encoding
        raise ValueError(f"ivfpq needs at least {index_config.min_train_vectors} database images to train, "
                         f"{place_set.name} has {len(place_set.database)}; use the flat index")
    start = time.perf_counter()
    db_desc = encode_paths(encoder, place_set.database, batch_size, desc="encoding database")
    q_desc = encode_paths(encoder, place_set.queries, batch_size, desc="encoding queries")
    encode_s = time.perf_counter() - start

    scores, ranked, index_kind = retrieve(q_desc, db_desc, ks[-1], index_config, sequence)

    ground_truths = {"soft": place_set.positives}
    if any(not np.array_equal(h, s) for h, s in zip(place_set.hard_positives, place_set.positives)):
        ground_truths["hard"] = place_set.hard_positives

    result = {
        "dataset": place_set.name,
        "encoder": encoder.name,
        "descriptor_dim": int(encoder.dim),
        "index": index_kind,
        "sequence": None if index_kind != "sequence" else sequence.__dict__.copy(),
        "num_database": len(place_set.database),
        "num_queries": len(place_set.queries),
        # wall time for reading + encoding database and queries, per image
        "encode_ms_per_image": 1000.0 * encode_s / (len(place_set.database) + len(place_set.queries)),
        "pr_curves": {},
    }
    for name, positives in ground_truths.items():
        recall = recall_at_n(ranked, positives, ks)
        top1_correct = np.array([ids[0] in pos for ids, pos in zip(ranked, positives)])
        curve = pr_curve(scores[:, 0], top1_correct, recall.num_evaluated)
        result[name] = {
            **{f"recall@{n}": r for n, r in recall.recalls.items()},
            "pr_auc": pr_auc(curve),
            "recall_at_100_precision": recall_at_100_precision(curve),
            "num_evaluated": recall.num_evaluated,
            "num_skipped": recall.num_skipped,
        }
        result["pr_curves"][name] = {
            "precision": np.round(curve.precision, 6).tolist(),
            "recall": np.round(curve.recall, 6).tolist(),
        }
    return result


def format_table(result: dict) -> str:
    ks = sorted(int(k.split("@")[1]) for k in result["soft"] if k.startswith("recall@"))
    head = f"{'GT':<5}" + "".join(f"{f'R@{k}':>8}" for k in ks) + f"{'AUC':>8}{'R@100P':>8}"
    seq = result.get("sequence")
    lines = [
        f"{result['dataset']} | {result['encoder']}"
        + (f" | sequences of {seq['length']} ({seq['normalization']})" if seq else "")
        + f" | {result['num_queries']} queries, "
        f"{result['num_database']} database, dim {result['descriptor_dim']}, "
        f"{result['encode_ms_per_image']:.2f} ms/img",
        head,
    ]
    for gt in ("soft", "hard"):
        if gt in result:
            r = result[gt]
            lines.append(
                f"{gt:<5}" + "".join(f"{100 * r[f'recall@{k}']:8.1f}" for k in ks)
                + f"{100 * r['pr_auc']:8.1f}{100 * r['recall_at_100_precision']:8.1f}"
            )
    skipped = result["soft"]["num_skipped"]
    if skipped:
        lines.append(f"({skipped} queries without any true match were left out of Recall@N)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (either --nordland64 or --database + --queries)")
    data.add_argument("--nordland64", metavar="SPLIT", choices=sorted(NORDLAND64_SPLITS),
                      help="shared nordland64: winter queries -> summer database, split train|val|test")
    data.add_argument("--database", type=Path, help="database image folder (or CSV for --layout csv)")
    data.add_argument("--queries", type=Path, help="query image folder (or CSV for --layout csv)")
    data.add_argument("--layout", choices=("auto", "aligned", "utm", "csv"), default="auto",
                      help="aligned: file names end in a frame number; utm: @east@north@... names; "
                           "csv: image,x,y[,heading] files; auto: detect (default)")
    data.add_argument("--soft-tolerance", type=int, default=10,
                      help="aligned layouts: |frame_q - frame_db| <= this is a soft match (default 10)")
    data.add_argument("--radius-m", type=float, default=25.0,
                      help="utm/csv layouts: database images within this many metres match (default 25)")
    data.add_argument("--frame-range", metavar="LO:HI", help="aligned layout: keep frame numbers LO..HI (inclusive)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help=f"checkpoint (a path, or a shipped checkpoint's bare file "
                                                      f"name) or baseline: {' | '.join(BASELINES)}")
    model.add_argument("--resize", metavar="WxH",
                       help="force this network input size; default: the model's input rule (a pixel budget at the "
                            "image's aspect, or an older checkpoint's fixed training size)")
    model.add_argument("--seed", type=int, default=0, help="random-mobilenetv2 initialisation seed (default 0)")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    add_inference_arguments(model)
    model.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--index", choices=("flat", "ivfpq"), default="flat", help="faiss index kind (default flat)")
    add_sequence_arguments(parser)
    parser.add_argument("--out", type=Path, help="write results as JSON here")
    parser.add_argument("--plot", type=Path, help="PR-curve PNG (default: next to --out, same name .png)")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    place_set, data_info = _load_data(args)
    encoder, model_info = _load_model(args, place_set)
    sequence = sequence_config_from_args(args, args.model)
    if sequence.length > 1 and args.index != "flat":
        raise CliError("--sequence-length > 1 scores every database image (exact): drop --index ivfpq")
    result = evaluate_place_set(encoder, place_set, DEFAULT_KS, IndexConfig(args.index), args.batch_size, sequence)
    result = {**model_info, **data_info, **result}
    print(format_table(result))

    plot_path = args.plot or (args.out.with_suffix(".png") if args.out else None)
    if plot_path is not None:
        curves = {f"{gt} GT (AUC {100 * result[gt]['pr_auc']:.1f})": (c["precision"], c["recall"])
                  for gt, c in result["pr_curves"].items()}
        plot_pr(curves, plot_path, title=f"{result['dataset']}: {result['encoder']}")
        result["plot"] = str(plot_path)
        print(f"PR curve: {plot_path}")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        print(f"results: {args.out}")
    return 0


def _load_data(args) -> tuple[PlaceSet, dict]:
    if args.nordland64:
        if args.database or args.queries:
            raise CliError("--nordland64 chooses the folders itself; drop --database/--queries")
        if args.frame_range:
            raise CliError("--frame-range does not combine with --nordland64 (the split fixes the range); "
                           "use --database .../summer --queries .../winter --frame-range LO:HI")
        root = shared_dir() / "data" / "nordland64"
        place_set = nordland64(root, args.nordland64, soft_tolerance=args.soft_tolerance)
        return place_set, {
            "split": args.nordland64,
            "frame_range": list(NORDLAND64_SPLITS[args.nordland64]),
            "database_dir": str(root / "summer"),
            "queries_dir": str(root / "winter"),
            "layout": "aligned",
            "soft_tolerance": args.soft_tolerance,
        }
    if not (args.database and args.queries):
        raise CliError("give --nordland64 SPLIT, or both --database and --queries")
    layout = args.layout if args.layout != "auto" else _detect_layout(args.database, args.queries)
    frame_range = parse_frame_range(args.frame_range)
    if frame_range and layout != "aligned":
        raise CliError(f"--frame-range only applies to the aligned layout, not '{layout}'")
    info = {"split": "custom", "database_dir": str(args.database), "queries_dir": str(args.queries), "layout": layout}
    if layout == "aligned":
        place_set = aligned_folders(args.database, args.queries, soft_tolerance=args.soft_tolerance,
                                    hard_tolerance=0, frame_range=frame_range)
        info.update(frame_range=list(frame_range) if frame_range else None, soft_tolerance=args.soft_tolerance)
    elif layout == "utm":
        place_set = utm_folders(args.database, args.queries, radius_m=args.radius_m)
        info.update(radius_m=args.radius_m)
    else:
        place_set = csv_poses(args.database, args.queries, radius_m=args.radius_m)
        info.update(radius_m=args.radius_m)
    return place_set, info


def _detect_layout(database: Path, queries: Path) -> str:
    kinds = {}
    for label, path in (("--database", database), ("--queries", queries)):
        if path.is_file() and path.suffix.lower() == ".csv":
            kinds[label] = "csv"
        elif path.is_dir():
            first = next((p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")), None)
            if first is None:
                raise CliError(f"{label} folder is empty: {path}")
            kinds[label] = "utm" if first.name.startswith("@") else "aligned"
        elif not path.exists():
            raise FileNotFoundError(f"{label} not found: {path}")
        else:
            raise CliError(f"{label} must be an image folder or a .csv file: {path}")
    if kinds["--database"] != kinds["--queries"]:
        raise CliError(f"--database looks like layout '{kinds['--database']}' but --queries like "
                       f"'{kinds['--queries']}'; both must use the same layout")
    return kinds["--database"]


def _load_model(args, place_set: PlaceSet) -> tuple[Encoder, dict]:
    size = parse_size(args.resize)
    if args.model == "raw-pixel" and size is not None:
        raise CliError("--resize does not apply to raw-pixel (it uses its own fixed patch-normalised grid)")
    resolved = resolve_model(args.model)  # a bare shipped name, a path or a baseline, as everywhere
    encoder = load_encoder(args.model, device=args.device, input_size=size, seed=args.seed,
                           runtime=args.runtime, precision=args.precision)
    rule = getattr(encoder, "input_rule", None)
    first = read_rgb(place_set.queries[0])
    info = {
        "model": args.model,
        "checkpoint": None if isinstance(resolved, str) else str(resolved),
        "checkpoint_sha256": None if isinstance(resolved, str) else file_sha256(resolved),
        # the network input of the first query image (raw-pixel: its grid), and the rule behind it
        "resolution": list(rule.size_for(first.shape[1], first.shape[0]) if rule else encoder.size),
        "input_rule": rule.describe() if rule else None,
        "seed": args.seed if args.model == "random-mobilenetv2" else None,
        "device": str(getattr(encoder, "device", "cpu")),
        "inference": encoder.path.describe() if hasattr(encoder, "path") else None,
    }
    return encoder, info
