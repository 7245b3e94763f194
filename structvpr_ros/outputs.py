"""Output messages of the loop-closure node, built from core results (no node state here).

- ``loop_closure_msg``: structvpr_msgs/LoopClosure, the typed result.
- ``lio_sam_msg``: LIO-SAM's loop input, std_msgs/Float64MultiArray [t_query, t_match] (s).
- ``relocalization_msg`` + ``relocalization_pose``: geometry_msgs/PoseWithCovarianceStamped.
- ``loop_markers``: visualization_msgs/MarkerArray, a line query pose -> match pose.
- ``diagnostics_msg``: diagnostic_msgs/DiagnosticArray.

Poses are 7-vectors ``x y z qx qy qz qw`` (the map database's layout). Every per-query
message carries the query image stamp in ``header.stamp``.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, PoseWithCovarianceStamped
from std_msgs.msg import ColorRGBA, Float64MultiArray, Header
from structvpr_msgs.msg import LoopCandidate, LoopClosure
from visualization_msgs.msg import Marker, MarkerArray

from structvpr_core.loop_closure.geometry import Verification
from structvpr_core.loop_closure.candidates import NS_PER_S, Candidate
from structvpr_core.retrieval.map_database import Keyframe
from structvpr_ros.stamps import ns_to_stamp, stamp_to_ns  # noqa: F401  (stamp_to_ns: the node's, via outputs)

# PoseWithCovariance marks "unknown" covariance entries this way (see LoopCandidate.msg)
UNKNOWN_VARIANCE = -1.0


# --- pose algebra -------------------------------------------------------------------------
def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w), w >= 0 (Shepperd's method)."""
    m = np.asarray(R, np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2 * np.sqrt(1 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = s / 4
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q if q[3] >= 0 else -q


def pose_to_matrix(pose7) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(pose7[3:])
    T[:3, 3] = pose7[:3]
    return T


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    return np.concatenate([T[:3, 3], matrix_to_quat(T[:3, :3])])


def relocalization_pose(
    keyframe_pose,
    base_to_camera,
    verification: Verification | None,
    position_std_m: float,
    orientation_std_rad: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Query base pose in the map frame + 6x6 covariance (x y z, rotation about X Y Z).

    Without verification the query is placed at the keyframe's pose. With a verified
    relative pose the relative rotation is composed through the camera mounting
    (``T_map_base(kf) @ T_base_cam @ T_camkf_camq @ T_cam_base``); the monocular
    translation has no scale, so it is not applied. Position variance: the place-match
    radius ``position_std_m``^2 on x y z. Orientation variance: the verification's
    rotation covariance rotated into the map frame, else ``orientation_std_rad``^2.
    """
    T_map_kf = pose_to_matrix(keyframe_pose)
    covariance = np.zeros((6, 6))
    covariance[:3, :3] = np.eye(3) * position_std_m**2
    if verification is None or not verification.verified:
        covariance[3:, 3:] = np.eye(3) * orientation_std_rad**2
        return np.asarray(keyframe_pose, np.float64).copy(), covariance
    T_base_cam = pose_to_matrix(base_to_camera)
    T_rel = np.eye(4)
    T_rel[:3, :3] = verification.rotation
    T_map_query = T_map_kf @ T_base_cam @ T_rel @ np.linalg.inv(T_base_cam)
    R_map_camkf = (T_map_kf @ T_base_cam)[:3, :3]
    covariance[3:, 3:] = R_map_camkf @ verification.rotation_covariance @ R_map_camkf.T
    return matrix_to_pose(T_map_query), covariance


# --- messages ---------------------------------------------------------------------------
def _pose_msg(pose7) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in pose7[:3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in pose7[3:])
    return p


def relative_pose_msg(v: Verification) -> PoseWithCovariance:
    """The candidate's relative pose: rotation + unit translation, translation variance unknown."""
    msg = PoseWithCovariance()
    msg.pose = _pose_msg(np.concatenate([v.translation, matrix_to_quat(v.rotation)]))
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.eye(3) * UNKNOWN_VARIANCE  # monocular: no scale
    if v.rotation_covariance is not None:
        cov[3:, 3:] = v.rotation_covariance
    msg.covariance = cov.ravel().tolist()
    return msg


def loop_closure_msg(header: Header, query_id: int, matches: list[tuple[Candidate, Keyframe]],
                     sequence_length: int, sequence_start_stamp_ns: int) -> LoopClosure:
    """The sequence spans ``sequence_length`` queries (consecutive ids up to ``query_id``) from the given stamp."""
    msg = LoopClosure(header=header, query_id=int(query_id), query_stamp=header.stamp,
                      sequence_length=int(sequence_length), sequence_start_query_id=int(query_id) - (sequence_length - 1),
                      sequence_start_stamp=ns_to_stamp(sequence_start_stamp_ns))
    for candidate, keyframe in matches:
        c = LoopCandidate(map_id=int(candidate.map_id), stamp=ns_to_stamp(keyframe.stamp_ns),
                          frame_id=keyframe.frame_id, score=float(candidate.score),
                          sequence_start_map_id=int(candidate.map_id))
        if candidate.sequence is not None:
            c.sequence_match = True
            c.sequence_start_map_id = int(candidate.sequence.start_map_id)
            c.sequence_velocity = float(candidate.sequence.velocity)
        v = candidate.verification
        c.inliers = -1 if v is None else int(v.inliers)
        c.verified = bool(v is not None and v.verified)
        if v is not None and v.verified:  # a failed verification's pose is noise
            c.has_relative_pose = True
            c.relative_pose = relative_pose_msg(v)
        msg.candidates.append(c)
    return msg


def lio_sam_msg(query_stamp_ns: int, match_stamp_ns: int) -> Float64MultiArray:
    """LIO-SAM's external loop input: data = [t_current, t_match] in seconds."""
    return Float64MultiArray(data=[query_stamp_ns / NS_PER_S, match_stamp_ns / NS_PER_S])


def relocalization_msg(stamp: Time, frame_id: str, pose7, covariance: np.ndarray) -> PoseWithCovarianceStamped:
    msg = PoseWithCovarianceStamped(header=Header(stamp=stamp, frame_id=frame_id))
    msg.pose.pose = _pose_msg(pose7)
    msg.pose.covariance = np.asarray(covariance, np.float64).ravel().tolist()
    return msg


def loop_markers(stamp: Time, frame_id: str, query_id: int, query_pose7, match_pose7, verified: bool) -> MarkerArray:
    """One persistent line per loop closure (id = query id): green if verified, yellow if not."""
    line = Marker(header=Header(stamp=stamp, frame_id=frame_id), ns="loop_closures", id=int(query_id),
                  type=Marker.LINE_LIST, action=Marker.ADD)
    line.pose.orientation.w = 1.0
    line.scale.x = 0.1  # line width, m
    line.color = ColorRGBA(r=0.1, g=0.9, b=0.1, a=1.0) if verified else ColorRGBA(r=1.0, g=0.8, b=0.0, a=1.0)
    line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in (query_pose7, match_pose7)]
    return MarkerArray(markers=[line])


def diagnostics_msg(stamp: Time, name: str, values: dict[str, float | int | str],
                    errors: list[str], warnings: list[str]) -> DiagnosticArray:
    """One status: ERROR if there are ``errors``, else WARN if ``warnings``, else OK; the message lists them."""
    level = DiagnosticStatus.ERROR if errors else DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
    status = DiagnosticStatus(
        level=level,
        name=name,
        hardware_id=name,
        message="; ".join(errors + warnings) or "OK",
        values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in values.items()],
    )
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
