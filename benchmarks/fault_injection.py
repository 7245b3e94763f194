"""Fault injection: the bad inputs of the issue-20 audit replayed against the node and the CLI.

Every case is tried for real (an rclpy node over loopback, node processes sent SIGINT /
SIGTERM, CLI subprocesses, files on disk; faults that root would bypass are injected with
``test/fault_helpers.py``: root's file-permission override dropped, a file-size limit standing
in for a full disk) and classified:

- clear: refused or skipped with a message naming the thing (parameter, file, topic), or
  counted in /diagnostics; nothing reported kept is lost
- traceback: a Python traceback reached the user
- silent: accepted without a word (a wrong answer, a parameter ignored, a frame inserted)
- lost: keyframes the node reported are not on disk after it stopped, without a FATAL saying so

It also measures the featureless-frame statistic (``runtime/featureless.py``) on every image
of ../shared/data (folders and ROS 1 bags) and reports the margin to the threshold.

    .venv/bin/python benchmarks/fault_injection.py            # ~2 min on 2 busy cores
    -> prints the table and totals, writes benchmarks/results/fault_injection.json
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))  # ros_helpers (isolated DDS domain, Client), fault_helpers

# ruff: noqa: E402  (ros_helpers sets the DDS domain before rclpy loads)
import numpy as np
import yaml
from fault_helpers import file_size_limit, without_root_file_override
from ros_helpers import NS_PER_S, Client, diagnostic_values, image_msg, overrides, ros_context, spin_until

from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.paths import shared_dir
from structvpr_core.retrieval.map_database import MapDatabase, MapError, ModelIdentity, open_map
from structvpr_core.runtime.featureless import MIN_STRUCTURE, image_structure

LEARNED = "lite0_realres_none_seed2_fp16.pt"
# not camera frames (../shared/data/README.md): ros_numpy's test bag holds a 360x240 image of random
# pixels and a 2x2 PNG; the check is right to call both featureless
SYNTHETIC = ("rosnumpy_test.bag",)
BASE = dict(model="raw-pixel", keyframe_min_interval_s=0.0, diagnostics_period_s=0.2)
NORDLAND = [f"summer/images-{f:05d}.png" for f in range(33200, 33300, 10)]
results: list[dict] = []


def record(item: str, case: str, status: str, detail: str) -> None:
    results.append({"item": item, "case": case, "status": status, "detail": detail.strip().splitlines()[-1][:240]
                    if detail.strip() else ""})
    print(f"{status:>9}  {item:<4} {case:<58} {results[-1]['detail'][:110]}", flush=True)


def classify_output(code: int, output: str, expect: str) -> tuple[str, str]:
    if "Traceback" in output:
        return "traceback", output[output.index("Traceback"):]
    if code != 0 and expect in output:
        return "clear", next((line for line in output.splitlines() if expect in line), expect)
    return "silent", f"exit {code}: {output[-300:]}"


# --- node parameters --------------------------------------------------------------------------

PARAMETER_CASES = [
    ("C1", {"sequence_length": 100_000_000}, "sequence_length must be in"),
    ("C1", {"sequence_velocity_steps": 1_000_000_000}, "sequence_velocity_steps must be in"),
    ("C2", {"cpu_threads": 100_000}, "cpu_threads must be in"),
    ("C2", {"verification_threads": 100_000}, "verification_threads must be in"),
    ("C2", {"top_k": 1_000_000}, "top_k must be in"),
    ("C2", {"consistency_k": 10**9}, "consistency_k must be in"),
    ("C2", {"qos_depth": 10**6}, "qos_depth must be in"),
    ("C2", {"max_pixels": 10**12}, "max_pixels must be in"),
    ("T2", {"max_features": 2_000_000_000, "verification": "annotate"}, "max_features must be in"),
    ("T1", {"image_topic": "bad topic!!"}, "image_topic: 'bad topic!!' is not a valid ROS topic name"),
    ("T1", {"compressed_topic": "a//b"}, "compressed_topic: 'a//b' is not a valid ROS topic name"),
    ("T1", {"odom_topic": "1odom"}, "odom_topic: '1odom' is not a valid ROS topic name"),
    ("U4", {"map_dir": "   "}, "map_dir '   ' starts or ends with spaces"),
    ("D1", {"map_dir": "{tmp}/file.txt"}, "map_dir {tmp}/file.txt is an existing file"),
    ("D1", {"map_dir": "{tmp}/file.txt/map"}, "is a file, not a directory"),
    ("D1", {"autosave_keyframes": -1}, "autosave_keyframes must be >= 0"),
]


def parameter_cases(tmp: Path) -> None:
    """Each case is a node process under a 4 GB address-space limit: a parameter that allocates
    without bound (sequence_length 1e8 grew a node to 21.7 GB) must not take the machine with it."""
    (tmp / "file.txt").write_text("x")
    for item, params, expect in PARAMETER_CASES:
        params = {k: v.format(tmp=tmp) if isinstance(v, str) else v for k, v in params.items()}
        expect = expect.format(tmp=tmp)
        case = ", ".join(f"{k}={v!r}" for k, v in params.items())
        path = tmp / "params.yaml"
        path.write_text(yaml.safe_dump({"structvpr_node": {"ros__parameters": {**BASE, **params}}}))
        code, output = _run_node_until_ready(path)
        if code is None:
            record(item, case, "silent", "the node started")
        else:
            record(item, case, *classify_output(code or 1, output, expect))


def _run_node_until_ready(params: Path, timeout_s: float = 60.0) -> tuple[int | None, str]:
    """(exit code, output) of a node that refused to start; (None, output) once it says 'ready'
    (or is still running after ``timeout_s``)."""
    import os
    import queue
    import resource
    import threading

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))

    env = {**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", str(params)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=limit_memory)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            return proc.wait(), "".join(seen)
        seen.append(line)
        if "] ready: " in line:
            break
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return None, "".join(seen)


def params_file_cases(tmp: Path) -> None:
    path = tmp / "empty_list.yaml"
    path.write_text("structvpr_node:\n  ros__parameters:\n    model: raw-pixel\n    base_to_camera: []\n")
    run = subprocess.run([sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    record("U4", "base_to_camera: [] in a params file",
           *classify_output(run.returncode, run.stdout + run.stderr, "base_to_camera: no value"))


# --- node inputs -------------------------------------------------------------------------------

def _featureless(shape) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20)
    return {"black": np.zeros(shape, np.uint8), "dark noise": rng.integers(0, 16, shape, dtype=np.uint8),
            "uniform grey": np.full(shape, 128, np.uint8),
            "lens cap": np.clip(rng.normal(4, 2, shape), 0, 255).astype(np.uint8)}


def _start(context, wait: bool = True, **params):
    from rclpy.executors import SingleThreadedExecutor

    from structvpr_ros.node import StructVPRNode

    node = StructVPRNode(context=context, parameter_overrides=overrides(**{**BASE, **params}))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    client = Client(context, executor)
    if wait:
        client.wait_connected(30)
    return node, client


def _handled(node) -> int:
    s = node.stats
    return s.processed + s.skipped + s.invalid + s.dropped


def _send_raw(node, client, msg, timeout_s=30.0) -> None:
    before = _handled(node)
    client.image_pub.publish(msg)
    spin_until(client.executor, lambda: _handled(node) > before, timeout_s, "the frame handled")


def featureless_cases(summer) -> None:
    for model in (LEARNED, "raw-pixel"):
        with ros_context() as context:
            node, client = _start(context, model=model, score_threshold=0.5, exclude_recent_s=30.0)
            _send_raw(node, client, image_msg(np.zeros((480, 640, 3), np.uint8), 100 * NS_PER_S))
            for i in range(3):
                client.send_image(image_msg(summer[i], (101 + i) * NS_PER_S))
            for k, (name, rgb) in enumerate(_featureless((480, 640, 3)).items()):
                invalid, lio = node.stats.invalid, len(client.lio_sam)
                _send_raw(node, client, image_msg(rgb, (136 + k) * NS_PER_S))  # 36 s later, as in the audit
                client.executor.spin_once(timeout_sec=0.1)
                if node.stats.invalid > invalid and len(client.lio_sam) == lio:
                    record("S1", f"{name} frame, model {model}", "clear", "counted invalid, not inserted")
                else:
                    record("S1", f"{name} frame, model {model}", "silent",
                           f"invalid {node.stats.invalid - invalid}, loop closures {len(client.lio_sam) - lio}")
            node.destroy_node()


def stamp_and_odometry_cases(summer) -> None:
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Header

    from ros_helpers import stamp

    def odometry(t_ns, frame_id, sec=None, nanosec=None):
        odom = Odometry(header=Header(stamp=stamp(t_ns), frame_id=frame_id), child_frame_id="base_link")
        if sec is not None:
            odom.header.stamp.sec, odom.header.stamp.nanosec = sec, nanosec
        odom.pose.pose.orientation.w = 1.0
        return odom

    with ros_context() as context:
        node, client = _start(context, odom_topic="odom")
        future = time.time_ns() // NS_PER_S + 10 * 86400
        for k, (name, sec, nanosec) in enumerate([("negative stamp", -5, 0), ("nanosec 1.5e9", 100, 1_500_000_000),
                                                  ("stamp 10 days ahead", future, 0)]):
            msg = image_msg(summer[k], 0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            invalid, size = node.stats.invalid, len(node.db)
            _send_raw(node, client, msg)
            ok = node.stats.invalid > invalid and len(node.db) == size
            record("S7", f"image with {name}", "clear" if ok else "silent", "counted invalid" if ok else "inserted")
            rejected = node.stats.odometry_rejected
            client.odom_pub.publish(odometry(0, "map", sec, nanosec))
            try:
                spin_until(client.executor, lambda: node.stats.odometry_rejected > rejected, 3, "")
                record("S7", f"odometry with {name}", "clear", "rejected, counted")
            except AssertionError:
                record("S7", f"odometry with {name}", "silent", "accepted")
        t = 200 * NS_PER_S
        client.odom_pub.publish(odometry(t, "odom"))
        client.send_image(image_msg(summer[3], t))
        record("S4", "odometry in frame 'odom' (map_frame 'map')",
               "clear" if node.stats.odometry_rejected == 4 and node.db.keyframe(len(node.db) - 1).pose is None
               else "silent", f"odometry_rejected {node.stats.odometry_rejected}")
        client.odom_pub.publish(odometry(t, "map"))
        client.send_image(image_msg(summer[4], t + 10 * NS_PER_S))
        record("S4", "odometry 10 s stale", "clear" if node.stats.keyframes_without_pose >= 1 else "silent",
               f"keyframes_without_pose {node.stats.keyframes_without_pose}")
        node.destroy_node()


def monitoring_cases(tmp: Path) -> None:
    import rclpy
    from sensor_msgs.msg import CompressedImage

    def warned(client, text, timeout_s=5.0) -> bool:
        try:
            spin_until(client.executor, lambda: any(text in diagnostic_values(m)["_message"]
                                                    for m in client.diagnostics), timeout_s, text)
            return True
        except AssertionError:
            return False

    with ros_context() as context:
        node, client = _start(context, wait=False, image_topic="cam", input_timeout_s=0.3)  # nobody on 'cam'
        record("S5", "camera never publishes", "clear" if warned(client, "no publisher on /cam") else "silent",
               "WARN: no publisher on /cam")
        with ros_context() as other:
            camera = rclpy.create_node("wrong_camera", context=other)
            camera.create_publisher(CompressedImage, "cam", 10)
            ok = warned(client, "has type sensor_msgs/msg/CompressedImage")
            record("S5", "publisher of the wrong type on the image topic", "clear" if ok else "silent",
                   "WARN names the type")
            camera.destroy_node()
        node.destroy_node()
    encoder_dim = 2048
    MapDatabase(ModelIdentity("raw-pixel-64x32-p8", encoder_dim)).save(tmp / "empty_map")
    with ros_context() as context:
        node, client = _start(context, mode="localization", map_dir=str(tmp / "empty_map"))
        record("S8", "localization on a 0-keyframe map",
               "clear" if warned(client, "holds 0 keyframes") else "silent", "WARN on /diagnostics")
        node.destroy_node()


# --- shutdown: the map must survive -----------------------------------------------------------

def _node_process(tmp: Path, preexec_fn=None) -> subprocess.Popen:
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"structvpr_node": {"ros__parameters": {
        **BASE, "map_dir": str(tmp / "map")}}}))
    return subprocess.Popen([sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", str(params)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=preexec_fn)


def shutdown_cases(summer, tmp_root: Path) -> None:
    from rclpy.executors import SingleThreadedExecutor

    for name, sig, preexec in [("SIGINT", signal.SIGINT, None), ("SIGTERM", signal.SIGTERM, None),
                               ("SIGINT with a full disk", signal.SIGINT, file_size_limit(4096))]:
        tmp = Path(tempfile.mkdtemp(dir=tmp_root))
        proc = _node_process(tmp, preexec)
        sent = 0
        try:
            with ros_context() as context:
                executor = SingleThreadedExecutor(context=context)
                client = Client(context, executor)
                client.wait_connected(60)
                for i, rgb in enumerate(summer[:5]):
                    client.send_image(image_msg(rgb, (100 + i) * NS_PER_S))
                    sent += 1
            proc.send_signal(sig)
            output, _ = proc.communicate(timeout=30)
        except Exception:
            proc.kill()
            output = proc.communicate()[0]
            record("D1", f"mapping run ended by {name}", "traceback", traceback.format_exc() + output)
            continue
        try:
            kept = len(MapDatabase.load(tmp / "map"))
        except (OSError, MapError):
            kept = 0
        if "Traceback" in output:
            status = "traceback"
        elif kept == sent:
            status = "clear"
        else:
            status = "clear" if "are LOST" in output and proc.returncode != 0 else "lost"
        record("D1", f"mapping run ended by {name}", status,
               f"{kept} of {sent} keyframes on disk, exit {proc.returncode}"
               + ("; FATAL names the loss" if "are LOST" in output else ""))


# --- CLI -----------------------------------------------------------------------------------------

def _cli(args, preexec_fn=None) -> tuple[int, str]:
    run = subprocess.run([sys.executable, "-m", "structvpr_core.cli", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, preexec_fn=preexec_fn)
    return run.returncode, run.stdout + run.stderr


def cli_cases(tmp: Path) -> None:
    folder = tmp / "imgs"
    folder.mkdir()
    for name in NORDLAND[:3]:
        (folder / Path(name).name).write_bytes((shared_dir() / "data/nordland64" / name).read_bytes())
    (tmp / "file.txt").write_text("x")
    (tmp / "notamap").mkdir()
    (tmp / "notamap" / "thesis.tex").write_text("x")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    build = ["build-map", "--model", "raw-pixel", "--images", str(folder)]
    bag = ["make-bag", "--images", str(folder), "--nordland-poses"]
    cases = [
        ("T3", "build-map --out an existing file", [*build, "--out", str(tmp / "file.txt")], None, "existing file"),
        ("T3", "build-map --out below a file", [*build, "--out", str(tmp / "file.txt/m")], None, "is a file"),
        ("T3", "build-map --out a non-map directory", [*build, "--out", str(tmp / "notamap")], None,
         "not a map directory"),
        ("T3", "build-map --out in a read-only directory", [*build, "--out", str(ro / "m")],
         without_root_file_override, "Permission denied"),
        ("T3", "build-map on a full disk", [*build, "--out", str(tmp / "m_full")], file_size_limit(16384),
         "writing the map to"),
        ("T2", "build-map --max-features 2000000000", [*build, "--with-features", "--max-features", "2000000000",
                                                       "--out", str(tmp / "m2")], None, "--max-features must be in"),
        ("T3", "make-bag --out an existing file", [*bag, "--out", str(tmp / "file.txt")], None, "existing file"),
        ("T3", "make-bag --out in a read-only directory", [*bag, "--out", str(ro / "b")],
         without_root_file_override, "Permission denied"),
        ("T3", "make-bag on a full disk (sqlite3)", [*bag, "--out", str(tmp / "b_full")], file_size_limit(8192),
         "writing the bag"),
    ]
    for item, case, args, preexec, expect in cases:
        record(item, case, *classify_output(*_cli(args, preexec), expect))
    ro.chmod(0o755)
    bad = folder / Path(NORDLAND[1]).name
    bad.chmod(0o000)
    for tool, args in (("build-map", [*build, "--out", str(tmp / "m3")]), ("make-bag", [*bag, "--out", str(tmp / "b3")])):
        record("T4", f"{tool} with an unreadable image (mode 000)",
               *classify_output(*_cli(args, without_root_file_override), f"cannot read image file {bad}"))
        code, output = _cli([*args[:-2], "--skip-invalid", args[-2], args[-1] + "_skip"], without_root_file_override)
        ok = code == 0 and "1 unreadable image(s) skipped" in output
        record("T4", f"{tool} --skip-invalid with an unreadable image", "clear" if ok else
               "traceback" if "Traceback" in output else "silent", output.strip().splitlines()[-1] if output else "")
    bad.chmod(0o644)


# --- map files -----------------------------------------------------------------------------------

def map_cases(tmp: Path, summer) -> None:
    from structvpr_core.io_utils import file_sha256
    from structvpr_core.retrieval.index import DescriptorIndex
    from structvpr_core.runtime.encoder import RawPixelEncoder

    encoder = RawPixelEncoder()
    desc = encoder.encode(summer)
    identity = ModelIdentity(encoder.name, encoder.dim)

    def fresh(name):
        db = MapDatabase(identity)
        for i, d in enumerate(desc):
            db.add(d, (100 + i) * NS_PER_S, "camera", pose=[i, 0, 0, 0, 0, 0, 1])
        return db.save(tmp / name)

    def rehash(d, file):
        meta = json.loads((d / "meta.json").read_text())
        meta["sha256"][file] = file_sha256(d / file)
        (d / "meta.json").write_text(json.dumps(meta))

    def index(d, vectors):
        idx = DescriptorIndex(vectors.shape[1])
        idx._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.arange(len(vectors), dtype=np.int64))
        idx.save(d / "index.faiss")
        rehash(d, "index.faiss")

    def keyframes(d, **changes):
        with np.load(d / "keyframes.npz") as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update({k: fn(arrays[k]) for k, fn in changes.items()})
        np.savez(d / "keyframes", **arrays)
        rehash(d, "keyframes.npz")

    def meta_dim(d):
        meta = json.loads((d / "meta.json").read_text())
        meta["model"]["dim"] = str(meta["model"]["dim"])
        (d / "meta.json").write_text(json.dumps(meta))

    def nan_stamp(s):
        with np.errstate(invalid="ignore"):
            s[1] = np.array(np.nan).astype(np.int64)
        return s

    def set_pose(p, row, col, value):
        p[row, col] = value
        return p

    cases = [
        ("descriptors scaled x100", lambda d: index(d, desc * 100), "index.faiss"),
        ("a NaN descriptor row", lambda d: index(d, np.where(np.arange(len(desc))[:, None] == 2, np.nan, desc)),
         "index.faiss"),
        ("a zero descriptor", lambda d: index(d, np.where(np.arange(len(desc))[:, None] == 2, 0.0, desc)),
         "index.faiss"),
        ("a NaN stamp (INT64_MIN)", lambda d: keyframes(d, stamps_ns=nan_stamp), "keyframes.npz"),
        ("string stamps", lambda d: keyframes(d, stamps_ns=lambda s: s.astype(str)), "keyframes.npz"),
        ("an inf pose", lambda d: keyframes(d, poses=lambda p: set_pose(p, 0, 0, np.inf)), "keyframes.npz"),
        ("a non-unit quaternion", lambda d: keyframes(d, poses=lambda p: set_pose(p, 1, 6, 5.0)), "keyframes.npz"),
        ("meta.json dim \"2048\" (a string)", meta_dim, "meta.json"),
    ]
    for k, (case, damage, file) in enumerate(cases):
        d = fresh(f"map{k}")
        damage(d)
        try:
            MapDatabase.load(d)
            record("S6", f"map with {case}", "silent", "loaded")
        except MapError as e:
            record("S6" if "dim" not in case else "U3", f"map with {case}",
                   "clear" if str(d) in str(e) and file in str(e) else "silent", str(e))
        except Exception:
            record("S6", f"map with {case}", "traceback", traceback.format_exc())
    (tmp / "mapfile").write_text("x")
    try:
        open_map(tmp / "mapfile", identity, create=False)
        record("U3", "map_dir that is a regular file", "silent", "opened")
    except MapError as e:
        record("U3", "map_dir that is a regular file", "clear" if "is a file" in str(e) else "silent", str(e))


# --- featureless statistic on every real frame ------------------------------------------------------

def measure_real_frames() -> dict:
    from structvpr_ros import bag_io
    from structvpr_ros.image_conversion import message_to_rgb

    data = shared_dir() / "data"
    groups: dict[str, list[float]] = {}
    for path in sorted(data.rglob("*")):
        if path.suffix.lower() in (".png", ".jpg") and "labels" not in path.parts:
            groups.setdefault(str(path.parent.relative_to(data)), []).append(image_structure(read_rgb(path)))
    for bag in sorted(data.rglob("*.bag")):
        with bag_io.open_bag(bag) as reader:
            topics = [c.topic for c in reader.connections if c.msgtype in bag_io.IMAGE_TYPES]
        for topic in topics:
            for image in bag_io.image_messages(bag, topic):
                groups.setdefault(f"{bag.relative_to(data)}:{topic}", []).append(
                    image_structure(message_to_rgb(image.msg)))
    sets = {name: {"frames": len(v), "min": round(min(v), 3), "p1": round(float(np.percentile(v, 1)), 3),
                   "median": round(float(np.median(v)), 3), "below_threshold": int(sum(x < MIN_STRUCTURE for x in v)),
                   "synthetic": any(s in name for s in SYNTHETIC)}
            for name, v in groups.items()}
    real = {k: v for k, v in sets.items() if not v["synthetic"]}
    lowest = min(real, key=lambda k: real[k]["min"])
    return {"threshold": MIN_STRUCTURE, "sets": sets, "real_frames": sum(v["frames"] for v in real.values()),
            "real_below_threshold": sum(v["below_threshold"] for v in real.values()),
            "lowest_real_set": lowest, "lowest_real_structure": real[lowest]["min"],
            "margin": round(real[lowest]["min"] / MIN_STRUCTURE, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fault_injection.json"))
    args = parser.parse_args()
    started = time.time()
    summer = [read_rgb(shared_dir() / "data/nordland64" / name) for name in NORDLAND]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        for name, run in [("parameters", lambda: parameter_cases(tmp / "p")),
                          ("params files", lambda: params_file_cases(tmp / "p")),
                          ("featureless", lambda: featureless_cases(summer)),
                          ("stamps and odometry", lambda: stamp_and_odometry_cases(summer)),
                          ("monitoring", lambda: monitoring_cases(tmp / "m")),
                          ("shutdown", lambda: shutdown_cases(summer, tmp / "s")),
                          ("cli", lambda: cli_cases(tmp / "c")),
                          ("map files", lambda: map_cases(tmp / "f", summer))]:
            for sub in ("p", "m", "s", "c", "f"):
                (tmp / sub).mkdir(exist_ok=True)
            try:
                run()
            except Exception:
                record("-", f"{name}: the harness itself failed", "traceback", traceback.format_exc())
    frames = measure_real_frames()
    totals = Counter(r["status"] for r in results)
    summary = {"tried": len(results), **{k: totals.get(k, 0) for k in ("clear", "traceback", "silent", "lost")}}
    print(f"\ninputs tried {summary['tried']}: clear {summary['clear']}, traceback {summary['traceback']}, "
          f"silent {summary['silent']}, lost {summary['lost']}  ({time.time() - started:.0f} s)")
    print(f"featureless threshold {MIN_STRUCTURE}: real frame sets (min structure, frames below):")
    for name, s in frames["sets"].items():
        print(f"  {name:<66} {s['frames']:>5} frames  min {s['min']:8.2f}  below {s['below_threshold']}"
              + ("  (synthetic: random pixels / 2x2)" if s["synthetic"] else ""))
    print(f"real frames: {frames['real_frames']}, below the threshold: {frames['real_below_threshold']}; lowest "
          f"{frames['lowest_real_set']} {frames['lowest_real_structure']} = {frames['margin']}x the threshold")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"command": "benchmarks/fault_injection.py", "totals": summary,
                                       "cases": results, "featureless_real_frames": frames,
                                       "seconds": round(time.time() - started)}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
