"""Soak: the node in mapping mode under 30 Hz 640x480 camera input for N minutes.

The node runs as its own process (``python -m structvpr_ros.node`` with
config/structvpr.yaml, mode mapping, in-memory map); this process publishes real CamVid
frames upscaled to the camera size (rgb8 ``sensor_msgs/Image``, RELIABLE, fresh stamps
1/rate apart) on the schedule t0 + i / rate and records, every ``--sample-s``:

- the node's resident memory (VmRSS of its process) and map size (/diagnostics);
- latency of the frames sent in that window: image published -> its LoopClosure
  received, p50 / p99 (only keyframes are answered: frames closer than
  ``keyframe_min_interval_s`` to the last keyframe are skipped by design);
- frames the node dropped (a newer one arrived while it was busy) and frames that never
  reached it (sent - received).

Memory must stay bounded apart from the map's own growth: the report fits
RSS = a + b * map_size over the samples after the first minute and compares b with the
map's own bytes per keyframe (the descriptor in the flat faiss index + its records), and
gives the largest deviation from that line.

    .venv/bin/python benchmarks/soak.py --minutes 10 --out benchmarks/results/soak_cpu.json

The machine may be shared: the load average is recorded with every sample.
"""

from __future__ import annotations

import argparse
import bisect
import os
import random

# a private DDS domain on this machine only, set before any ROS library loads
# (the node process inherits it)
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

# ruff: noqa: E402
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from structvpr_core.arguments import parse_size
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.paths import shared_dir
from structvpr_ros.image_conversion import rgb_to_image_fields
from structvpr_ros.outputs import ns_to_stamp
from structvpr_ros.replay import DEFAULT_PARAMS, NodeProcess, Recorder, ReplaySession

IMAGE_TOPIC = "/camera/image_raw"
WARMUP_S = 60.0  # excluded from the memory fit: allocator pools and imports settle first
FIRST_STAMP_NS = 1_700_000_000 * 1_000_000_000
# map records besides the descriptor, per keyframe: stamp (8) + pose row (56) + list
# entries and short strings for frame_id / source / features (~3 x 60)
RECORD_BYTES = 8 + 56 + 180


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate-hz", type=float, default=30.0)
    parser.add_argument("--size", default="640x480", help="published image size WxH")
    parser.add_argument("--model", default="raw-pixel", help="node model (default raw-pixel)")
    parser.add_argument("--keyframe-interval-s", type=float, default=0.1,
                        help="node keyframe_min_interval_s (default 0.1: 10 keyframes/s grow the map fast)")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--out", default="benchmarks/results/soak_cpu.json")
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate_hz <= 0 or args.sample_s <= 0:
        parser.error("--minutes, --rate-hz and --sample-s must be > 0")
    size = parse_size(args.size)
    images = camera_images(size)
    overrides = {"mode": "mapping", "map_dir": "", "model": args.model, "device": "cpu",
                 "image_topic": IMAGE_TOPIC, "compressed_topic": "", "odom_topic": "", "use_sim_time": False,
                 "keyframe_min_interval_s": args.keyframe_interval_s, "diagnostics_period_s": 1.0}

    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="structvpr_soak_") as tmp:
        log_path = Path(tmp) / "node.log"
        try:
            with ReplaySession(Path(args.params), overrides, image_topic=IMAGE_TOPIC, compressed=False,
                               recorder=recorder, separate_process=True, log_path=log_path) as session:
                samples = soak(args, images, session.image_pub, recorder, session.node)
        finally:
            node_log = log_summary(log_path)

    dim = {"raw-pixel": 64 * 32}.get(args.model)
    result = {
        "benchmark": "soak", "model": args.model, "minutes": args.minutes, "rate_hz": args.rate_hz,
        "image_size": list(size), "node_overrides": overrides, "sample_s": args.sample_s,
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "memory": memory_fit(samples, dim), "node_log": node_log, "samples": samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(table(result))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def camera_images(size: tuple[int, int]) -> list[Image]:
    """Real street frames at the camera size, as rgb8 Image messages (stamps set when sent)."""
    paths = sorted((shared_dir() / "data" / "camvid_sample" / "images").glob("*.png"))
    if not paths:
        raise SystemExit("no CamVid frames under the shared data folder (set STRUCTVPR_SHARED)")
    return [Image(header=Header(frame_id="camera"),
                  **rgb_to_image_fields(cv2.resize(read_rgb(p), size, interpolation=cv2.INTER_LINEAR), "rgb8"))
            for p in paths]


def soak(args, images: list[Image], publisher, recorder: Recorder, node: NodeProcess) -> list[dict]:
    period_ns = round(1e9 / args.rate_hz)
    total = round(args.minutes * 60 * args.rate_hz)
    per_sample = max(1, round(args.sample_s * args.rate_hz))
    sent: list[tuple[int, float]] = []  # (stamp ns, publish time)
    samples: list[dict] = []
    t0 = time.monotonic()
    for i in range(total):
        time.sleep(max(0.0, t0 + i / args.rate_hz - time.monotonic()))
        msg = images[i % len(images)]
        stamp = FIRST_STAMP_NS + i * period_ns
        msg.header.stamp = ns_to_stamp(stamp)
        sent.append((stamp, time.monotonic()))
        publisher.publish(msg)
        if (i + 1) % per_sample == 0 and i + 1 < total:
            node.check_alive()
            samples.append(sample(sent, t0, recorder, node))
            print(f"  t {samples[-1]['t_s']:6.0f} s  rss {samples[-1]['rss_mb']:7.1f} MB  map "
                  f"{samples[-1]['map_size']}", flush=True)
    time.sleep(2.0)  # the last answers, and a /diagnostics issued after the last frame
    samples.append(sample(sent, t0, recorder, node))
    # latency per window, once every answer is in (waiting for them mid-run would stall the schedule)
    start = 0
    for row in samples:
        with recorder.changed:
            latencies = [(recorder.answers[s].received - t) * 1e3 for s, t in sent[start:row["sent"]]
                         if s in recorder.answers]
        start = row["sent"]
        row["window_answered"] = len(latencies)
        row["latency_ms_p50"] = round(float(np.percentile(latencies, 50)), 2) if latencies else None
        row["latency_ms_p99"] = round(float(np.percentile(latencies, 99)), 2) if latencies else None
    return samples


def sample(sent: list[tuple[int, float]], t0: float, recorder: Recorder, node: NodeProcess) -> dict:
    """One row: the node's memory and counters now (latencies are added at the end)."""
    with recorder.changed:
        diag, diag_at = dict(recorder.diagnostics or {}), recorder.diagnostics_at
    return {
        "t_s": time.monotonic() - t0,
        "rss_mb": rss_mb(node.proc.pid),
        "map_size": diag.get("map_size"),
        "sent": len(sent),
        # compare with "received": the frames sent before that /diagnostics message was published
        "sent_before_diagnostics": bisect.bisect_right(sent, diag_at, key=lambda e: e[1]),
        "received": diag.get("frames_received"),
        "processed": diag.get("frames_processed"),
        "dropped": diag.get("frames_dropped"),
        "skipped": diag.get("frames_skipped_not_keyframe"),
        "invalid": diag.get("frames_invalid"),
        "errors": diag.get("processing_errors"),
        "loadavg_1min": os.getloadavg()[0],
    }


def log_summary(path: Path) -> dict:
    """Warning / error lines of the node's log, and how often it saw image stamps go backwards
    (it then restarts keyframe selection, so every such frame becomes a keyframe)."""
    lines = path.read_text(errors="replace").splitlines()
    return {"warn_lines": sum("[WARN]" in line for line in lines),
            "error_lines": sum("[ERROR]" in line or "[FATAL]" in line for line in lines),
            "stamps_jumped_back": sum("jumped back in time" in line for line in lines),
            "first_problems": [line for line in lines if "[WARN]" in line or "[ERROR]" in line][:5]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def memory_fit(samples: list[dict], dim: int | None) -> dict:
    """RSS = a + b * map_size over the samples after warm-up; b against the map's own bytes per keyframe."""
    rows = [(s["map_size"], s["rss_mb"]) for s in samples if s["t_s"] >= WARMUP_S and s["map_size"] is not None]
    if len(rows) < 3:
        return {"note": f"fewer than 3 samples after the {WARMUP_S:.0f} s warm-up: no fit"}
    size, rss = np.array(rows, float).T
    b, a = np.polyfit(size, rss, 1)
    expected = (dim * 4 + RECORD_BYTES) / 2**20 if dim else None
    return {
        "samples_fitted": len(rows),
        "rss_mb_at_first_fitted": float(rss[0]), "rss_mb_at_end": float(rss[-1]),
        "map_size_first_fitted": int(size[0]), "map_size_end": int(size[-1]),
        "fit_kb_per_keyframe": b * 1024,
        "map_own_kb_per_keyframe": expected * 1024 if expected else None,
        "max_deviation_from_fit_mb": float(np.abs(rss - (a + b * size)).max()),
        "growth_beyond_map_mb": float(rss[-1] - rss[0] - (size[-1] - size[0]) * expected) if expected else None,
    }


def table(result: dict) -> str:
    lines = [f"soak: {result['minutes']:g} min of {result['rate_hz']:g} Hz "
             f"{result['image_size'][0]}x{result['image_size'][1]} rgb8 into the node (mapping, {result['model']})",
             f"{'t s':>6} {'RSS MB':>8} {'map':>6} {'sent':>6} {'recv':>6} {'proc':>6} {'drop':>5} "
             f"{'p50 ms':>7} {'p99 ms':>7} {'load':>5}"]
    for s in result["samples"]:
        lines.append(f"{s['t_s']:>6.0f} {s['rss_mb']:>8.1f} {s['map_size'] or 0:>6} {s['sent_before_diagnostics']:>6} "
                     f"{s['received'] or 0:>6} {s['processed'] or 0:>6} {s['dropped'] or 0:>5} "
                     f"{s['latency_ms_p50'] or 0:>7.1f} {s['latency_ms_p99'] or 0:>7.1f} {s['loadavg_1min']:>5.2f}")
    m = result["memory"]
    if "fit_kb_per_keyframe" in m:
        own = m["map_own_kb_per_keyframe"]
        lines.append(f"memory after warm-up: {m['rss_mb_at_first_fitted']:.1f} -> {m['rss_mb_at_end']:.1f} MB while "
                     f"the map grew {m['map_size_first_fitted']} -> {m['map_size_end']} keyframes; fit "
                     f"{m['fit_kb_per_keyframe']:.2f} KB/keyframe (map's own "
                     f"{'-' if own is None else f'{own:.2f}'} KB), max deviation {m['max_deviation_from_fit_mb']:.1f} MB"
                     + ("" if m["growth_beyond_map_mb"] is None
                        else f", growth beyond the map {m['growth_beyond_map_mb']:.1f} MB"))
    else:
        lines.append(m["note"])
    log = result["node_log"]
    lines.append(f"node log: {log['warn_lines']} warnings ({log['stamps_jumped_back']} 'stamps jumped back'), "
                 f"{log['error_lines']} errors")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = [r["t_s"] / 60 for r in s]
    fig, (ax_mem, ax_lat, ax_drop) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax_mem.plot(t, [r["rss_mb"] for r in s], "b-", label="node RSS (MB)")
    ax_mem.set_xlabel("minutes")
    ax_mem.set_ylabel("RSS MB", color="b")
    ax_map = ax_mem.twinx()
    ax_map.plot(t, [r["map_size"] or 0 for r in s], "g--", label="map size")
    ax_map.set_ylabel("map keyframes", color="g")
    ax_mem.set_title("memory and map size")
    ax_lat.plot(t, [r["latency_ms_p50"] for r in s], label="p50")
    ax_lat.plot(t, [r["latency_ms_p99"] for r in s], label="p99")
    ax_lat.set_xlabel("minutes")
    ax_lat.set_ylabel("image published -> LoopClosure, ms")
    ax_lat.set_title("latency per window")
    ax_lat.legend()
    ax_drop.plot(t, [r["dropped"] or 0 for r in s], label="dropped by the node (newer frame came)")
    ax_drop.plot(t, [r["sent_before_diagnostics"] - (r["received"] or 0) for r in s], label="not received")
    ax_drop.set_xlabel("minutes")
    ax_drop.set_ylabel("frames (cumulative)")
    ax_drop.set_title("drops")
    ax_drop.legend()
    fig.suptitle(f"soak: {result['rate_hz']:g} Hz {result['image_size'][0]}x{result['image_size'][1]}, "
                 f"mapping, {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
