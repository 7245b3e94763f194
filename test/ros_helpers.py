"""Shared helpers for the rclpy tests: isolated DDS domain, own Context, spin-with-deadline.

Importing this module puts the test run in a random ROS domain on localhost-only
discovery, so parallel test runs (and other people's nodes on the machine) never see
each other's topics; child processes started by a test inherit it.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

# ruff: noqa: E402  (the environment above must be set before rclpy loads)
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from structvpr_msgs.msg import LoopClosure
from visualization_msgs.msg import MarkerArray

from structvpr_ros.image_conversion import rgb_to_image_fields
from structvpr_ros.stamps import ns_to_stamp as stamp  # noqa: F401  (tests import both from here)
from structvpr_ros.stamps import stamp_to_ns as stamp_ns  # noqa: F401

RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
NS_PER_S = 1_000_000_000


@contextmanager
def ros_context():
    """A fresh rclpy Context (own DDS participant) for one test, shut down afterwards."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


def overrides(**params) -> list[Parameter]:
    """Keyword arguments -> ``parameter_overrides`` for a Node."""
    return [Parameter(name, value=value) for name, value in params.items()]


def spin_until(executor: SingleThreadedExecutor, predicate, timeout_s: float, what: str) -> None:
    """Spin until ``predicate()`` is true; fail with ``what`` when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        executor.spin_once(timeout_sec=0.02)


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8") -> Image:
    return Image(header=Header(stamp=stamp(stamp_ns), frame_id=frame_id), **rgb_to_image_fields(rgb, encoding))


class Client:
    """The test's side of the node: image/odometry publishers, output subscribers, service calls.

    Topic names are the node's defaults under ``node_name``; everything RELIABLE.
    """

    def __init__(self, context: Context, executor, node_name: str = "structvpr_node",
                 image_topic: str = "image", compressed_topic: str = "compressed", odom_topic: str = "odom"):
        self.executor = executor
        self.node = rclpy.create_node("structvpr_test_client", context=context)
        executor.add_node(self.node)
        self.loop_closures: list = []
        self.lio_sam: list = []
        self.relocalizations: list = []
        self.markers: list = []
        self.diagnostics: list = []
        ns = f"/{node_name}"
        for msg_type, topic, store in [
            (LoopClosure, f"{ns}/loop_closure", self.loop_closures),
            (Float64MultiArray, f"{ns}/loop_closure_lio_sam", self.lio_sam),
            (PoseWithCovarianceStamped, f"{ns}/relocalization", self.relocalizations),
            (MarkerArray, f"{ns}/markers", self.markers),
            (DiagnosticArray, "/diagnostics", self.diagnostics),
        ]:
            self.node.create_subscription(msg_type, topic, store.append, RELIABLE)
        self.image_pub = self.node.create_publisher(Image, image_topic, RELIABLE)
        self.compressed_pub = self.node.create_publisher(CompressedImage, compressed_topic, RELIABLE)
        self.odom_pub = self.node.create_publisher(Odometry, odom_topic, RELIABLE)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", RELIABLE)
        self._ns = ns

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        spin_until(self.executor, lambda: self.image_pub.get_subscription_count() > 0
                   and self.node.count_publishers(f"{self._ns}/loop_closure") > 0, timeout_s, "the node's topics")

    def send_image(self, msg, timeout_s: float = 10.0):
        """Publish an image and wait for the LoopClosure answering it (same stamp)."""
        before = len(self.loop_closures)
        (self.compressed_pub if hasattr(msg, "format") else self.image_pub).publish(msg)
        spin_until(self.executor, lambda: any(m.header.stamp == msg.header.stamp
                                              for m in self.loop_closures[before:]),
                   timeout_s, f"a LoopClosure for the image stamped {msg.header.stamp}")
        return next(m for m in self.loop_closures[before:] if m.header.stamp == msg.header.stamp)

    def send_odometry(self, stamp_ns_: int, x: float, y: float = 0.0, yaw: float = 0.0) -> None:

        odom = Odometry(header=Header(stamp=stamp(stamp_ns_), frame_id="map"), child_frame_id="base_link")
        odom.pose.pose.position.x, odom.pose.pose.position.y = float(x), float(y)
        odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
        self.odom_pub.publish(odom)

    def call(self, service: str, timeout_s: float = 10.0):
        client = self.node.create_client(Trigger, f"{self._ns}/{service}")
        spin_until(self.executor, client.service_is_ready, timeout_s, f"service {service}")
        future = client.call_async(Trigger.Request())
        spin_until(self.executor, future.done, timeout_s, f"the {service} response")
        self.node.destroy_client(client)
        return future.result()

    def latest_diagnostics(self, predicate, timeout_s: float = 10.0) -> dict:
        """Spin until a /diagnostics message whose values satisfy ``predicate``; return its values."""
        def found():
            return any(predicate(diagnostic_values(m)) for m in self.diagnostics)

        spin_until(self.executor, found, timeout_s, "a matching /diagnostics message")
        return next(diagnostic_values(m) for m in reversed(self.diagnostics) if predicate(diagnostic_values(m)))


def diagnostic_values(msg) -> dict:
    status = msg.status[0]
    values = {kv.key: kv.value for kv in status.values}
    values["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)
    values["_message"] = status.message
    values["_stamp_ns"] = stamp_ns(msg.header.stamp)
    return values
