#!/usr/bin/env python3
"""Mean ± std over seeds of the experiment arms in a ``structvpr benchmark`` JSON.

    python training/ablation_table.py docs/realres_benchmark.json [--lengths 1 10] > table.md

Models are grouped by their run folder: ``.../seed<N>/<step>/best.pt`` -> arm ``<step>``.
Baselines (any other model) are listed as they are. R@1 soft, in %.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import numpy as np

RUN = re.compile(r"seed(\d+)/([^/]+)/best\.pt$")


def arm_of(model: str) -> tuple[str, int | None]:
    m = RUN.search(model)
    return (m.group(2), int(m.group(1))) if m else (model, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="benchmark JSON")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1], help="sequence lengths to tabulate")
    args = parser.parse_args()
    report = json.load(open(args.report, encoding="utf-8"))
    sets = [s["name"] for s in report["sets"]]
    for length in args.lengths:
        # arm -> set -> seed -> R@1
        table: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
        for r in report["results"]:
            if r["sequence_length"] == length:
                arm, seed = arm_of(r["model"])
                table[arm][r["set"]][seed] = 100 * r["soft"]["recall@1"]
        shown = [s for s in sets if any(s in per_set for per_set in table.values())]
        print(f"\nR@1 soft (%), sequence length {length}; arms: mean ± std over seeds (n)\n")
        print("| model / arm | " + " | ".join(shown) + " | mean over sets |")
        print("|---|" + "---:|" * (len(shown) + 1))
        for arm, per_set in table.items():
            seeds = sorted(set.intersection(*(set(per_set[s]) for s in shown)), key=lambda x: -1 if x is None else x)
            means = [np.mean([per_set[s][k] for s in shown]) for k in seeds]  # per seed: mean over sets
            cells = []
            for s in shown + [None]:
                values = [per_set[s][k] for k in seeds] if s else means
                cells.append(f"{np.mean(values):.1f}" + (f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""))
            label = f"{arm} ({len(seeds)})" if seeds != [None] else arm
            print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
