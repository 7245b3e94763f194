"""config/fastdds_shm.xml: a camera process using it delivers real 640x480 images intact to a
subscriber on Fast DDS's defaults, and the profile really takes effect (its 16 MB segment).
Its latency gain is measured in benchmarks/node_latency.py, not here."""

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from ros_helpers import RELIABLE, ros_context, spin_until
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from structvpr_core.paths import REPO_ROOT

PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"
SEGMENT_BYTES = 16 * 1024 * 1024  # config/fastdds_shm.xml's segment_size
FRAMES = 5

# A camera driver stand-in: publishes one real frame FRAMES times once a subscriber is there.
PUBLISHER = """
import sys, time
import cv2, rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
bgr = cv2.resize(cv2.imread(sys.argv[1]), (640, 480), interpolation=cv2.INTER_AREA)
rclpy.init()
node = rclpy.create_node("camera")
pub = node.create_publisher(Image, "fastdds_profile_images", QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
deadline = time.monotonic() + 20
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
msg = Image(height=480, width=640, encoding="bgr8", step=640 * 3, data=bgr.tobytes())
for i in range(%d):
    msg.header.frame_id = str(i)
    pub.publish(msg)
    time.sleep(0.1)
time.sleep(float(sys.argv[2]))  # stay up while the test looks at /dev/shm
node.destroy_node()
rclpy.shutdown()
""" % FRAMES


def _segments() -> dict[str, int]:
    return {p.name: p.stat().st_size for p in Path("/dev/shm").glob("fastdds_*") if not p.name.endswith("_el")}


def test_camera_process_with_the_profile_delivers_real_images_over_its_large_segment(shared):
    frame_path = shared / "data/gardenspoint/day_left/Image050.jpg"
    before = _segments()
    env = {**os.environ, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    camera = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(frame_path), "3"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    received: list[Image] = []
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = rclpy.create_node("fastdds_profile_test", context=context)
            node.create_subscription(Image, "fastdds_profile_images", received.append, RELIABLE)
            executor.add_node(node)
            spin_until(executor, lambda: len(received) == FRAMES, 30.0, f"{FRAMES} images from the camera process")
            new = {name: size for name, size in _segments().items() if name not in before}
            node.destroy_node()
    finally:
        output, _ = camera.communicate(timeout=30)
    assert camera.returncode == 0, output
    assert "error" not in output.lower(), output  # Fast DDS reports XML it cannot parse, then ignores it
    expected = cv2.resize(cv2.imread(str(frame_path)), (640, 480), interpolation=cv2.INTER_AREA)
    for i, msg in enumerate(received):
        assert msg.header.frame_id == str(i) and (msg.width, msg.height, msg.encoding) == (640, 480, "bgr8")
        got = np.frombuffer(msg.data, np.uint8).reshape(480, 640, 3)
        assert np.array_equal(got, expected)
    # the camera's shared-memory segment has the profile's size (the default is ~0.5 MB)
    assert any(size >= SEGMENT_BYTES for size in new.values()), new

