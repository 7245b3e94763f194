"""Are Gardens Point's traversals frame-aligned? Where each frame's verified-inlier peak lies.

The missions' ground truth says frame N of one pass is frame N of the other (+-2 frames). For
every frame N of the second pass, verify it (``geometry.verify``, shipped settings, every pair
counted) against first-pass frames N-7..N+7 and take the one with the most inliers. If the
passes were misaligned somewhere, the peaks there would sit beyond +-2. Per block of 20 frames:
the median peak offset and how many peaks lie beyond +-2, over frames whose peak is a verified
match (>= ``min_inliers``). XFeat and ORB (independent features) on day_left -> day_right, and
XFeat on day_right -> night_right (ORB does not survive night).

    .venv/bin/python benchmarks/gardenspoint_alignment.py
(-> benchmarks/results/gardenspoint_alignment.json, and a printed table)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (loaded before set_compute_threads, so torch gets the thread count too)

from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.loop_closure.geometry import verify
from structvpr_core.loop_closure.local_features import FeatureExtractor
from structvpr_core.paths import shared_dir
from structvpr_core.progress import progress
from structvpr_core.runtime.threads import set_compute_threads

PASSES = (("day_left", "day_right", ("xfeat", "orb")), ("day_right", "night_right", ("xfeat",)))
FRAMES = 200
WINDOW = 7
BLOCK = 20


def peaks(first: str, second: str, kind: str) -> list[dict]:
    shipped = LoopClosureConfig().geometry
    config = dataclasses.replace(shipped, features=kind, min_inliers=5)  # count every pair's inliers
    extract = FeatureExtractor.from_config(config)
    folder = shared_dir() / "data" / "gardenspoint"
    a = [extract(read_rgb(folder / first / f"Image{n:03d}.jpg")) for n in progress(range(FRAMES), desc=f"{kind} {first}")]
    rows = []
    for n in progress(range(FRAMES), desc=f"{kind} {second} peaks"):
        query = extract(read_rgb(folder / second / f"Image{n:03d}.jpg"))
        profile = {d: verify(query, a[n + d], config).inliers for d in range(-WINDOW, WINDOW + 1) if 0 <= n + d < FRAMES}
        best = max(profile, key=lambda d: (profile[d], -abs(d)))
        rows.append({"frame": n, "peak_offset": best, "peak_inliers": profile[best],
                     "own_frame_inliers": profile[0], "verified": profile[best] >= shipped.min_inliers})
    return rows


def blocks(rows: list[dict]) -> list[dict]:
    out = []
    for start in range(0, FRAMES, BLOCK):
        mine = [r for r in rows if start <= r["frame"] < start + BLOCK and r["verified"]]
        offsets = np.array([r["peak_offset"] for r in mine])
        out.append({"frames": f"{start}..{start + BLOCK - 1}", "verified_peaks": len(mine),
                    "median_offset": float(np.median(offsets)) if len(mine) else None,
                    "beyond_2": int((np.abs(offsets) > 2).sum()) if len(mine) else 0})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/gardenspoint_alignment.json")
    args = ap.parse_args()
    set_compute_threads(args.threads)
    result = {"benchmark": "gardenspoint_alignment", "window": WINDOW, "runs": []}
    for first, second, kinds in PASSES:
        for kind in kinds:
            rows = peaks(first, second, kind)
            result["runs"].append({"first": first, "second": second, "features": kind, "blocks": blocks(rows),
                                   "frames": rows})
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print("\n| passes | features | " + " | ".join(b["frames"] for b in result["runs"][0]["blocks"]) + " | total beyond +-2 |")
    print("|---|---|" + "---:|" * (FRAMES // BLOCK + 1))
    for run in result["runs"]:
        cells = [f"{b['median_offset']:+.0f} ({b['beyond_2']}/{b['verified_peaks']})" if b["verified_peaks"] else "-"
                 for b in run["blocks"]]
        total = sum(b["beyond_2"] for b in run["blocks"]), sum(b["verified_peaks"] for b in run["blocks"])
        print(f"| {run['first']} -> {run['second']} | {run['features']} | " + " | ".join(cells)
              + f" | {total[0]}/{total[1]} |")
    print("cells: median peak offset (peaks beyond +-2 / verified peaks)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
