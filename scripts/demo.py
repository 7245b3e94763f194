#!/usr/bin/env python3
"""End-to-end demo: the live node's loop closures, scored, in the two ways a robot uses it.

    .venv/bin/python scripts/demo.py            (from the repository root; ~5 min on 2 CPU cores)

A. Mapping mode (what SLAM runs): one bag that walks the Gardens Point test stretch by day, then
   again at night (``gardenspoint day_right->night_right test``, structvpr_core/evaluation/missions.py:
   frames 100..199, one per second, the night pass a minute later). The node starts with an empty
   map at its shipped defaults (config/structvpr.yaml) and every frame queries the map so far; half
   the frames are new places, where any loop closure is wrong. ``replay --mode mapping`` scores
   every query: loop closures published, how many wrong, precision, recall, recall@100%P, PR plot.

B. Localization against a prebuilt map (the replay of issue 17): the map is the Gardens Point day
   traversal's frames 0..99 (built with its XFeat features), the bag the night traversal's frames
   0..199, half of which have no match in the map; scored with +-2 frames as the true place.
   (Frames 0..99 are in the shipped model's training range; part A runs on the test stretch.)

Model (both parts): the shipped default student (``structvpr_core.models.shipped.DEFAULT_MODEL``:
EfficientNet-Lite0 from ImageNet, trained on nordland64 + gardenspoint + GRIEF train, chosen on
val; model card beside it in training/checkpoints/), at its own input rule (the camera's aspect, a pixel budget).
Outputs go to ./demo_out/ (mapping_report.json + mapping_report_pr.png, report.json + report_pr.png,
the maps and the bags).
"""

from __future__ import annotations

import argparse
import json
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
from structvpr_core.evaluation.loop_scoring import summary_line  # noqa: E402
from structvpr_core.evaluation.missions import MISSIONS, write_poses_csv  # noqa: E402

MAPPING_MISSION = "gardenspoint day_right->night_right test"
HALF_A_DAY_S = 12 * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--rate-scale", default="0",
                        help="replay speed vs the bags' 1 Hz (default 0 = as fast as the node answers)")
    args = parser.parse_args()
    # keep DDS traffic on this machine unless the user configured otherwise
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    data = shared_dir() / "data"
    if not (data / "gardenspoint").is_dir():
        print(f"demo: Gardens Point not found at {data / 'gardenspoint'} (set STRUCTVPR_SHARED)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = find_checkpoint(DEFAULT_MODEL)
    if model is None:
        print(f"demo: the shipped model {DEFAULT_MODEL} is missing from training/checkpoints/", file=sys.stderr)
        return 2
    print(f"model: {model.relative_to(REPO_ROOT) if model.is_relative_to(REPO_ROOT) else model}")
    mission_bag, night_bag = out / "mission.bag", out / "night.bag"
    for old in (mission_bag, night_bag):
        if old.exists():
            shutil.rmtree(old)  # make-bag never overwrites; these bags are the demo's own output
    mission = next(m for m in MISSIONS if m.name == MAPPING_MISSION)
    write_poses_csv(mission.frames(data), data, out / "mission_poses.csv")
    gardens = data / "gardenspoint"
    _frames_csv(out / "day_map.csv", "day_right", range(100), DEFAULT_START_S - HALF_A_DAY_S)
    _frames_csv(out / "night.csv", "night_right", range(200), DEFAULT_START_S)

    steps = [
        ("A. make-bag (Gardens Point day, then night)", ["make-bag", "--images", str(data), "--poses",
                                                          str(out / "mission_poses.csv"), "--out", str(mission_bag)]),
        ("A. replay, mapping mode, shipped defaults", [
            "replay", "--mode", "mapping", "--bag", str(mission_bag), "--model", str(model), "--device", "cpu",
            "--rate-scale", args.rate_scale, "--gt-radius", f"{mission.revisit_radius:g}",
            "--out", str(out / "mapping_report.json")]),
        ("B. build-map (Gardens Point day 0..99, with XFeat features)", [
            "build-map", "--model", str(model), "--device", "cpu", "--images", str(gardens), "--poses",
            str(out / "day_map.csv"), "--with-features", "--out", str(out / "day_map")]),
        ("B. make-bag (Gardens Point night 0..199)", ["make-bag", "--images", str(gardens), "--poses",
                                                      str(out / "night.csv"), "--out", str(night_bag)]),
        ("B. replay, localization mode, shipped defaults", [
            "replay", "--bag", str(night_bag), "--map", str(out / "day_map"), "--model", str(model),
            "--device", "cpu", "--rate-scale", args.rate_scale, "--gt-radius", "2", "--out", str(out / "report.json")]),
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
    print("\n== how right are the published loop closures (shipped defaults, every query scored)")
    for part, report in (("A. mapping", out / "mapping_report.json"), ("B. localization", out / "report.json")):
        [(name, result)] = json.loads(report.read_text())["ground_truth"].items()
        print(f"{part}: {summary_line(name, result)}\n   PR curve: {report.with_name(report.stem + '_pr.png')}")
    return 0


def _frames_csv(path: Path, traversal: str, frames, start_s: float) -> None:
    """A poses CSV over Gardens Point frames: x = frame number (the traversals are aligned), 1 s apart."""
    rows = ["image,x,y,stamp"] + [f"{traversal}/Image{i:03d}.jpg,{i},0,{start_s + k:.1f}" for k, i in enumerate(frames)]
    path.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
