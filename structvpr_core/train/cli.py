"""``structvpr train STEP --config training/X.yaml [--out DIR] [--seed N] [--resume]``.

STEP: stage1-rgb | stage1-seg | partition | stage2 | whiten | test | report. ``test`` evaluates the
val-selected ``best.pt`` of ``--step`` on the test split (hard and soft ground truth)
and writes ``test.json`` next to it; nothing ever selects on it.
``report --runs DIR --out DIR`` tabulates the test.json files of all seeds (mean +- std).
Also runnable as ``python -m structvpr_core.train.cli`` (what torchrun launches).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from structvpr_core.models.checkpoint import load_checkpoint
from structvpr_core.runtime.network import pick_device
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.train.config import STEPS, load_experiment
from structvpr_core.runtime.threads import set_compute_threads

TEST_STEPS = ("stage1-rgb", "stage1-seg", "stage2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=(*STEPS, "test", "report"))
    parser.add_argument("--config", help="experiment YAML (training/*.yaml); all steps but report")
    parser.add_argument("--runs", help="report: folder holding seed*/ run folders")
    parser.add_argument("--name", default="nordland64", help="report: file name prefix")
    parser.add_argument("--seeds", type=int, nargs="+", help="report: only these seeds (default: all found)")
    parser.add_argument("--labels", help="report: also summarise this label cache (<labels>/<season>/*.png)")
    parser.add_argument("--out", help="output directory (overrides out_dir; may contain {seed})")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in the output directory")
    parser.add_argument("--step", dest="test_step", choices=TEST_STEPS, help="test: which step's best.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        set_compute_threads(args.threads)  # torch, and faiss for the recall evaluations
    if args.step == "report":
        from pathlib import Path

        from structvpr_core.train.report import run_report

        if not args.runs or not args.out:
            raise ValueError("report needs --runs DIR and --out DIR")
        print(json.dumps(run_report(Path(args.runs), Path(args.out), args.name, args.seeds)))
        if args.labels:
            from structvpr_core.paths import shared_dir
            from structvpr_core.train.report import label_summary

            from structvpr_core.config import load_yaml

            label_set = load_yaml(Path(args.labels) / "segmentation.yaml")["label_set"]  # written by segment
            summary = label_summary(Path(args.labels), shared_dir() / "data" / "nordland64", label_set,
                                    Path(args.out) / f"{args.name}_labels.png")
            atomic_write_text(Path(args.out) / f"{args.name}_labels.json", json.dumps(summary, indent=1))
            for season, s in summary.items():
                print(season, {k: f"{100 * v:.1f}%" for k, v in s["clusters"].items()})
        return 0
    if not args.config:
        raise ValueError(f"{args.step} needs --config")
    cfg = load_experiment(args.config, seed=args.seed, out=args.out)
    if args.step in ("stage1-rgb", "stage1-seg"):
        from structvpr_core.train.stage1 import run_stage1

        result = run_stage1(cfg, args.step.split("-")[1], resume=args.resume)
    elif args.step == "partition":
        from structvpr_core.train.partition import run_partition

        result = run_partition(cfg)
    elif args.step == "stage2":
        from structvpr_core.train.stage2 import run_stage2

        result = run_stage2(cfg, resume=args.resume)
    elif args.step == "whiten":
        from structvpr_core.train.whiten import run_whiten

        result = run_whiten(cfg)
    else:
        if args.test_step is None:
            raise ValueError("test needs --step stage1-rgb | stage1-seg | stage2")
        result = run_test(cfg, args.test_step)
    print(json.dumps(result))
    return 0


def run_test(cfg, step: str) -> dict:
    from structvpr_core.train.data import load_split, make_banks
    from structvpr_core.train.evaluation import split_recalls
    from structvpr_core.train.stage1 import step_dir
    from structvpr_core.train.stage2 import stage2_dir

    folder = stage2_dir(cfg) if step == "stage2" else step_dir(cfg, step.split("-")[1])
    model, payload = load_checkpoint(folder / "best.pt")
    device = pick_device(cfg.device)
    model = model.to(device, memory_format=torch.channels_last)
    labels = cfg.labels_root() if model.config.branch == "seg" else None
    test = make_banks(load_split(cfg.data, "test"), model.config, labels)
    recalls = split_recalls(model, test, device, cfg.eval_batch_size)
    result = {"step": step, "split": test.place_set.name, "seed": cfg.seed, "checkpoint": str(folder / "best.pt"),
              "selected_epoch": payload["meta"].get("epoch"), "val": payload["meta"].get("val"), "test": recalls}
    atomic_write_text(folder / "test.json", json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    from structvpr_core.arguments import CliError

    parser = argparse.ArgumentParser(prog="structvpr train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (CliError, FileNotFoundError, ValueError) as e:
        print(f"structvpr train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
