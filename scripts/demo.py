#!/usr/bin/env python3
"""End-to-end demo: Nordland summer map, winter bag, live node, loop-closure report.

    .venv/bin/python scripts/demo.py            (from the repository root; ~3 min on 2 CPU cores)

1. build-map: Nordland64 summer, test stretch (frames 29000..35760, 677 images), poses
   x = frame number (structvpr_core/data/sequence.py explains the unit), stamped half a year
   before the bag.
2. make-bag: the winter pass of the same stretch as a rosbag2 (rgb8 images at 10 Hz +
   odometry from the same frame-number poses).
3. replay: the bag into the live StructVPR node (in-process, localization mode) at the
   bag's own rate, with sequence matching (the last 10 keyframes must retrace the map;
   ``--sequence-length 1`` = single-frame), scored against pose ground truth: radius 10
   frame numbers = the data set's soft tolerance (one neighbouring image), radius 0 =
   the exact frame.

Model: the shipped default student (``structvpr_core.models.shipped.DEFAULT_MODEL``:
EfficientNet-Lite0 from ImageNet, trained on nordland64 + gardenspoint + GRIEF train, chosen on
val; model card beside it in training/checkpoints/), at its own input size 320x160.
Outputs go to ./demo_out/ (report.json, report_pr.png, the map and the bag).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from structvpr_core.cli import main as structvpr  # noqa: E402
from structvpr_core.models.shipped import DEFAULT_MODEL, find_checkpoint  # noqa: E402
from structvpr_core.paths import shared_dir  # noqa: E402
from structvpr_core.data.sequence import DEFAULT_START_S  # noqa: E402

TEST_STRETCH = "29000:35760"
HALF_A_YEAR_S = 182 * 86400


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--rate-scale", default="1", help="replay speed vs the bag's 10 Hz (default 1; 0 = as fast as the node answers)")
    parser.add_argument("--sequence-length", default="10",
                        help="keyframes matched as a sequence (default 10; 1 = single-frame matching)")
    args = parser.parse_args()
    # keep DDS traffic on this machine unless the user configured otherwise
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    nordland = shared_dir() / "data" / "nordland64"
    if not nordland.is_dir():
        print(f"demo: Nordland64 not found at {nordland} (set STRUCTVPR_SHARED)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = find_checkpoint(DEFAULT_MODEL)
    if model is None:
        print(f"demo: the shipped model {DEFAULT_MODEL} is missing from training/checkpoints/", file=sys.stderr)
        return 2
    print(f"model: {model.relative_to(REPO_ROOT) if model.is_relative_to(REPO_ROOT) else model}")
    bag = out / "winter.bag"
    if bag.exists():
        shutil.rmtree(bag)  # make-bag never overwrites; this bag is the demo's own output

    steps = [
        ("build-map (summer)", ["build-map", "--model", str(model), "--device", "cpu",
                                "--images", str(nordland / "summer"), "--nordland-poses", "--frame-range", TEST_STRETCH,
                                "--start-stamp", str(DEFAULT_START_S - HALF_A_YEAR_S), "--out", str(out / "summer_map")]),
        ("make-bag (winter)", ["make-bag", "--images", str(nordland / "winter"), "--nordland-poses",
                               "--frame-range", TEST_STRETCH, "--out", str(bag)]),
        ("replay", ["replay", "--bag", str(bag), "--map", str(out / "summer_map"), "--model", str(model), "--device", "cpu",
                    "--rate-scale", args.rate_scale, "--sequence-length", args.sequence_length,
                    "--gt-radius", "10", "0", "--out", str(out / "report.json")]),
    ]
    started = time.perf_counter()
    timings = []
    for name, argv in steps:
        print(f"\n== {name}: structvpr {' '.join(argv)}", flush=True)
        t = time.perf_counter()
        code = structvpr(argv)
        timings.append((name, time.perf_counter() - t))
        if code != 0:
            print(f"demo: step '{name}' failed (exit {code})", file=sys.stderr)
            return code
    total = time.perf_counter() - started
    print("\n== timings: " + ", ".join(f"{name} {s:.1f} s" for name, s in timings) + f"; total {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
