"""ROS time stamps <-> integer nanoseconds: the one conversion the node, the tools and benchmarks use.

``stamp_to_ns`` takes any builtin_interfaces/Time (rclpy's, or rosbags' for bag messages);
``ns_to_stamp`` builds rclpy's (imported on use: the bag tools read stamps without ROS).
"""

from __future__ import annotations

from structvpr_core.loop_closure.candidates import NS_PER_S


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a stamp in nanoseconds."""
    return int(ns // NS_PER_S), int(ns % NS_PER_S)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)
