"""structvpr_msgs: the built interface carries every LoopClosure field through real DDS."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

try:
    from structvpr_msgs.msg import LoopCandidate, LoopClosure
except ImportError as err:  # a missing build must fail loudly, not skip
    raise ImportError(
        f"structvpr_msgs is not installed in this Python ({err}): run scripts/build_msgs.sh .venv"
    ) from err

RELIABLE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


@pytest.fixture
def ros_context(monkeypatch):
    # A random domain keeps parallel test runs on this shared machine apart; DDS reads
    # these variables at init, so they are set before rclpy.init.
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def test_interface_fields_match_the_design():
    assert LoopClosure.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "query_id": "uint64",
        "query_stamp": "builtin_interfaces/Time",
        "candidates": "sequence<structvpr_msgs/LoopCandidate>",
        "sequence_length": "uint32",
        "sequence_start_query_id": "uint64",
        "sequence_start_stamp": "builtin_interfaces/Time",
    }
    assert LoopCandidate.get_fields_and_field_types() == {
        "map_id": "uint64",
        "stamp": "builtin_interfaces/Time",
        "frame_id": "string",
        "score": "float",
        "verified": "boolean",
        "inliers": "int32",
        "has_relative_pose": "boolean",
        "relative_pose": "geometry_msgs/PoseWithCovariance",
        "sequence_match": "boolean",
        "sequence_start_map_id": "uint64",
        "sequence_velocity": "float",
    }


def _sample_loop_closure() -> LoopClosure:
    query_stamp = Time(sec=1_700_000_123, nanosec=456_789_012)
    verified = LoopCandidate(
        map_id=2**64 - 2,  # full uint64 range survives
        stamp=Time(sec=1_700_000_001, nanosec=5),
        frame_id="camera_left_optical_frame",
        score=0.875,  # exactly representable in float32
        verified=True,
        inliers=143,
        has_relative_pose=True,
        relative_pose=PoseWithCovariance(
            pose=Pose(
                position=Point(x=0.6, y=-0.0, z=0.8),  # unit vector: essential-matrix scale
                orientation=Quaternion(x=0.01, y=-0.02, z=0.03, w=0.99935),
            ),
            covariance=np.arange(36, dtype=np.float64) * 0.5 - 3.0,
        ),
    )
    unverified = LoopCandidate(
        map_id=7,
        stamp=Time(sec=1_699_999_000, nanosec=999_999_999),
        frame_id="camera_left_optical_frame",
        score=-0.25,
        verified=False,
        inliers=-1,
        has_relative_pose=False,
        sequence_match=True,
        sequence_start_map_id=2**64 - 1,
        sequence_velocity=-1.25,
    )
    third = LoopCandidate(map_id=0, frame_id="", score=0.0, inliers=0)
    return LoopClosure(
        header=Header(stamp=query_stamp, frame_id="camera_left_optical_frame"),
        query_id=2**63 + 5,
        query_stamp=query_stamp,
        candidates=[verified, unverified, third],
        sequence_length=2**32 - 1,
        sequence_start_query_id=2**63 - 5,
        sequence_start_stamp=Time(sec=1_700_000_100, nanosec=1),
    )


def test_loop_closure_round_trip_over_dds(ros_context):
    sent = _sample_loop_closure()
    received: list[LoopClosure] = []
    publisher_node = rclpy.create_node("loop_closure_publisher", context=ros_context)
    subscriber_node = rclpy.create_node("loop_closure_subscriber", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        publisher = publisher_node.create_publisher(LoopClosure, "loop_closure", RELIABLE_QOS)
        subscription = subscriber_node.create_subscription(
            LoopClosure, "loop_closure", received.append, RELIABLE_QOS
        )
        executor.add_node(publisher_node)
        executor.add_node(subscriber_node)

        published = False
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            # Publish once both ends have discovered each other, so the sample is not dropped.
            if (
                not published
                and publisher.get_subscription_count()
                and subscriber_node.count_publishers("/loop_closure")
            ):
                publisher.publish(sent)
                published = True
            executor.spin_once(timeout_sec=0.05)
        assert published, "publisher and subscriber never discovered each other within 10 s"
        assert received, "LoopClosure published but not received within 10 s"
        assert subscription.topic_name == "/loop_closure"
    finally:
        executor.shutdown()
        publisher_node.destroy_node()
        subscriber_node.destroy_node()

    got = received[0]
    assert got is not sent
    assert got.header.stamp == sent.header.stamp
    assert got.header.frame_id == "camera_left_optical_frame"
    assert got.query_id == 2**63 + 5
    assert got.query_stamp == Time(sec=1_700_000_123, nanosec=456_789_012)
    assert len(got.candidates) == 3
    first, second, third = got.candidates
    assert first.map_id == 2**64 - 2
    assert first.stamp == Time(sec=1_700_000_001, nanosec=5)
    assert first.frame_id == "camera_left_optical_frame"
    assert first.score == 0.875
    assert first.verified is True and first.inliers == 143 and first.has_relative_pose is True
    assert first.relative_pose.pose == sent.candidates[0].relative_pose.pose
    np.testing.assert_array_equal(first.relative_pose.covariance, np.arange(36) * 0.5 - 3.0)
    assert second.score == -0.25 and second.verified is False and second.inliers == -1
    assert second.has_relative_pose is False
    assert second.sequence_match is True and second.sequence_start_map_id == 2**64 - 1
    assert second.sequence_velocity == -1.25 and first.sequence_match is False
    assert got.sequence_length == 2**32 - 1 and got.sequence_start_query_id == 2**63 - 5
    assert second.stamp == Time(sec=1_699_999_000, nanosec=999_999_999)
    assert third == sent.candidates[2]
    assert got == sent  # generated __eq__ covers every field, nested ones included
