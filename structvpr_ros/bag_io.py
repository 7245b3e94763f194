"""rosbag2 and ROS 1 bag reading for the offline tools (``rosbags``; no ROS install needed).

Bags are read with ``rosbags``' AnyReader, so a ROS 1 ``.bag`` file (many public VPR / SLAM
data sets) reads like a rosbag2 directory. rosbag2 data is CDR, the bytes rclpy publishes,
so a replay forwards it untouched; ROS 1 data is converted to CDR with the ROS 2 Kilted
type store (``cdr_bytes``). Topics match with or without the leading slash ROS 1 bags
sometimes leave out.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.loop_closure.candidates import PoseBuffer
from structvpr_ros.stamps import split_ns, stamp_to_ns


@lru_cache(maxsize=1)
def typestore():
    """rosbags type store for ROS 2 Kilted (the distribution the rclpy wheels are)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ODOMETRY_TYPES = ("nav_msgs/msg/Odometry",)


@contextmanager
def open_bag(path: str | Path):
    """An open rosbags AnyReader over a rosbag2 directory or a ROS 1 ``.bag`` file, with clear errors."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Reader as Rosbag2Reader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag not found: {path}")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        if path.is_dir() and not reader.is2:
            # AnyReader takes a *.bag name for ROS 1, but a rosbag2 bag is a directory and is
            # often named *.bag as well (make-bag's examples are)
            reader.is2, reader.readers = True, [Rosbag2Reader(path)]
        reader.open()
    except Exception as e:  # rosbags raises several unrelated types (reader, storage, format errors)
        raise ValueError(f"{path}: not a readable rosbag2 directory or ROS 1 bag ({type(e).__name__}: {e})") from None
    try:
        yield reader
    finally:
        reader.close()


def same_topic(a: str, b: str) -> bool:
    """ROS 1 bags may name a topic without its leading slash; both spellings are the same topic."""
    return a.lstrip("/") == b.lstrip("/")


def topic_connections(reader, topic: str, allowed_types: tuple[str, ...]):
    path = reader.paths[0]
    conns = [c for c in reader.connections if same_topic(c.topic, topic)]
    if not conns:
        have = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
        raise ValueError(f"{path}: no topic {topic!r} (topics: {have})")
    wrong = [c.msgtype for c in conns if c.msgtype not in allowed_types]
    if wrong:
        raise ValueError(f"{path}: topic {topic!r} has type {wrong[0]}, expected one of {list(allowed_types)}")
    return conns


def cdr_bytes(reader, conn, raw) -> bytes:
    """A message as rclpy publishes it: rosbag2 data as stored, ROS 1 data converted to CDR."""
    return bytes(raw) if reader.is2 else bytes(typestore().ros1_to_cdr(raw, conn.msgtype))


@dataclass
class BagImage:
    index: int  # position on the image topic, 0-based
    log_ns: int  # when the bag recorded it
    header_ns: int  # header stamp; 0 when the camera driver left it empty
    frame_id: str
    msg: object  # the deserialized message (rosbags dataclass)

    @property
    def stamp_ns(self) -> int:
        """The header stamp, or the record time for an unstamped image (as the node uses its arrival time)."""
        return self.header_ns or self.log_ns

    def describe(self) -> str:
        return (f"image #{self.index} (header stamp {format_stamp(self.header_ns)}, "
                f"recorded at {format_stamp(self.log_ns)})")


def format_stamp(ns: int) -> str:
    sec, nanosec = split_ns(ns)
    return f"{sec}.{nanosec:09d} s"


def image_messages(path: str | Path, topic: str):
    """Yield a ``BagImage`` for every message on ``topic``, in bag order."""
    with open_bag(path) as reader:
        conns = topic_connections(reader, topic, IMAGE_TYPES)
        for i, (conn, log_ns, raw) in enumerate(reader.messages(connections=conns)):
            msg = reader.deserialize(raw, conn.msgtype)
            yield BagImage(i, int(log_ns), stamp_to_ns(msg.header.stamp), msg.header.frame_id, msg)


def read_odometry(path: str | Path, topic: str, max_offset_s: float) -> PoseBuffer:
    """Every Odometry pose on ``topic``, for lookups by image stamp (nearest within ``max_offset_s``)."""
    poses = PoseBuffer(max_offset_s, capacity=None)
    with open_bag(path) as reader:
        conns = topic_connections(reader, topic, ODOMETRY_TYPES)
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            poses.add(stamp_to_ns(msg.header.stamp), np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w]))
    return poses
