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


def stamp_problem(stamp, wall_now_ns: int, max_ahead_ns: int) -> str | None:
    """Why a message stamp cannot be used, or None. A zero stamp is fine here (the node gives it
    the arrival time); unnormalised (nanosec >= 1e9), negative and far-future stamps are not:
    stored, they break keyframe timing and recency exclusion and reach LIO-SAM as they are."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < NS_PER_S:
        return f"stamp {sec} s {nanosec} ns is not normalised (nanosec must be < 1e9)"
    if sec < 0:
        return f"stamp {sec}.{nanosec:09d} s is negative"
    ahead_s = (stamp_to_ns(stamp) - wall_now_ns) / NS_PER_S
    if ahead_s * NS_PER_S > max_ahead_ns:
        return (f"stamp {sec}.{nanosec:09d} s is {ahead_s:.0f} s ahead of this machine's clock "
                f"(stamp_max_ahead_s {max_ahead_ns / NS_PER_S:g})")
    return None
