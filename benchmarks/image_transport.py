"""Image transport between two processes over ROS 2 (Fast DDS), with and without config/fastdds_shm.xml.

What a camera image costs before the node sees it: a publisher process sends rgb8 images
(RELIABLE, depth 5) and an echo process answers each with its header; round trip = publish() ->
echo received, median / p95 over ``--frames`` images (the first 10 dropped as warm-up), one in
flight. Both processes start afresh per configuration, because Fast DDS reads its profile once per
process; the profile goes into both (it only matters in the publisher's, measured).

    .venv/bin/python benchmarks/image_transport.py --out benchmarks/results/image_transport_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from structvpr_core.io_utils import atomic_write_text

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"
TOPIC_IMAGES, TOPIC_ECHO = "transport_images", "transport_echo"
WARMUP = 10


def run_echo() -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = rclpy.create_node("transport_echo")
    pub = node.create_publisher(Header, TOPIC_ECHO, qos)
    node.create_subscription(Image, TOPIC_IMAGES, lambda msg: pub.publish(msg.header), qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


def run_source(width: int, height: int, frames: int) -> dict:
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = rclpy.create_node("transport_source")
    pub = node.create_publisher(Image, TOPIC_IMAGES, qos)
    answered: dict[str, float] = {}
    node.create_subscription(Header, TOPIC_ECHO, lambda h: answered.setdefault(h.frame_id, time.perf_counter()), qos)
    deadline = time.monotonic() + 30
    while (pub.get_subscription_count() == 0 or node.count_publishers(TOPIC_ECHO) == 0) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=image.tobytes())
    round_trips = []
    for i in range(frames):
        msg.header.frame_id = str(i)
        sent = time.perf_counter()
        pub.publish(msg)
        while str(i) not in answered:
            rclpy.spin_once(node, timeout_sec=1.0)
            if time.perf_counter() - sent > 10:
                raise SystemExit(f"image_transport: frame {i} ({width}x{height}) not answered within 10 s")
        round_trips.append(1e3 * (answered[str(i)] - sent))
        time.sleep(0.02)
    kept = np.array(round_trips[WARMUP:])
    return {"image": f"{width}x{height}", "bytes": width * height * 3, "frames": len(kept),
            "round_trip_ms_median": float(np.median(kept)), "round_trip_ms_p95": float(np.percentile(kept, 95))}


def measure(profile: str | None, size: str, frames: int) -> dict:
    env = {**os.environ, "ROS_DOMAIN_ID": str(random.SystemRandom().randint(101, 200)),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    echo = subprocess.Popen([sys.executable, __file__, "--role", "echo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        out = subprocess.run([sys.executable, __file__, "--role", "source", "--size", size, "--frames", str(frames)],
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        echo.terminate()
        echo.wait(timeout=10)
    if out.returncode != 0:
        raise SystemExit(f"image_transport: source failed for {size}, profile {profile}:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=("main", "echo", "source"), default="main", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="640x480", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", default=["64x32", "640x480", "1280x720"])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--profile", default=str(PROFILE), help="the Fast DDS profile to compare with the defaults")
    ap.add_argument("--out", default="benchmarks/results/image_transport_cpu.json")
    args = ap.parse_args()
    if args.role == "echo":
        return run_echo()
    if args.role == "source":
        width, height = map(int, args.size.split("x"))
        print(json.dumps(run_source(width, height, args.frames)))
        return None
    if not Path(args.profile).is_file():
        raise SystemExit(f"image_transport: profile not found: {args.profile}")
    load_start = os.getloadavg()[0]
    rows = [{"profile": label, **measure(profile, size, args.frames)}
            for size in args.sizes
            for label, profile in (("Fast DDS defaults", None), (Path(args.profile).name, str(Path(args.profile).resolve())))]
    result = {"benchmark": "image_transport", "qos": "RELIABLE depth 5", "rows": rows,
              "loadavg_1m_start": load_start, "loadavg_1m_end": os.getloadavg()[0]}
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(f"\nrgb8 images, publisher process -> echo process -> back, one in flight, load {load_start:.1f}")
    print(f"{'image':>10s}  {'profile':20s}{'median ms':>10s}{'p95 ms':>8s}")
    for r in rows:
        print(f"{r['image']:>10s}  {r['profile']:20s}{r['round_trip_ms_median']:10.2f}{r['round_trip_ms_p95']:8.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
