"""``structvpr make-bag``: turn an image sequence (+ poses) into a real rosbag2.

Images become ``sensor_msgs/Image`` (rgb8, bgr8 or mono8) or, with a jpeg/png encoding,
``sensor_msgs/CompressedImage``, stamped ``start + i / rate`` (or by the poses CSV's
``stamp`` column); poses, when given, become
``nav_msgs/Odometry`` on ``--odom-topic`` with the same stamps (written just before
each image, so a player has the pose when the image arrives). Messages are serialized
with rosbags' CDR for the ROS 2 Kilted types: the bytes rclpy would publish.

The bag is written in a temporary sibling directory and renamed into place when
complete, so an interrupted run never leaves a bag that looks finished. ``--out`` is checked
before any work (exists, unwritable parent); a write that fails on the way (full disk:
sqlite3 "database or disk is full", EFBIG) names the bag and the reason and leaves nothing.
An image that cannot be read stops the run naming the file, or is left out (with its
odometry) with ``--skip-invalid``.

Example (Nordland winter pass of the test stretch, poses along the track):
    structvpr make-bag --images ../shared/data/nordland64/winter --nordland-poses \\
        --frame-range 29000:35760 --out winter.bag --storage mcap
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import cv2
import numpy as np

from structvpr_core.arguments import parse_frame_range
from structvpr_core.data import sequence
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import OutputError, check_output_dir, describe_os_error
from structvpr_core.progress import progress
from structvpr_ros import bag_io
from structvpr_ros.image_conversion import rgb_to_image_fields
from structvpr_ros.stamps import split_ns

RAW_ENCODINGS = ("rgb8", "bgr8", "mono8")
COMPRESSED_FORMATS = ("jpeg", "png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="folder of images (ordered by frame number or name)")
    poses = parser.add_mutually_exclusive_group()
    poses.add_argument("--poses", help="poses CSV: image,x,y[,z][,qx,qy,qz,qw | ,heading][,stamp]")
    poses.add_argument("--nordland-poses", action="store_true",
                       help="pose x = Nordland frame number (no metric poses exist; see structvpr_core/data/sequence.py)")
    parser.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--topic", help="image topic (default /camera/image_raw, + /compressed for jpeg/png)")
    parser.add_argument("--encoding", default="rgb8", choices=RAW_ENCODINGS + COMPRESSED_FORMATS,
                        help="raw Image encoding, or jpeg/png for CompressedImage (default rgb8)")
    parser.add_argument("--compressed", action="store_true", help="shorthand for --encoding jpeg")
    parser.add_argument("--rate", type=float, default=sequence.DEFAULT_RATE_HZ,
                        help="frames per second when the poses CSV has no stamps (default 10)")
    parser.add_argument("--start-stamp", type=float, default=sequence.DEFAULT_START_S,
                        help=f"stamp of the first frame, seconds (default {sequence.DEFAULT_START_S:.0f})")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"))
    parser.add_argument("--frame-range", help="A:B, keep frames numbered A..B (inclusive)")
    parser.add_argument("--odom-topic", default="/odom", help="odometry topic for the poses (default /odom)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id of the images (default camera)")
    parser.add_argument("--odom-frame", default="map", help="header.frame_id of the odometry (default map)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave out images that cannot be read or decoded (default: stop at the first, naming it)")


def run(args: argparse.Namespace) -> int:
    encoding = "jpeg" if args.compressed and args.encoding in RAW_ENCODINGS else args.encoding
    if not 1 <= args.jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}")
    check_output_dir(args.out, "--out", must_not_exist=True)
    frames = sequence.load_sequence(args.images, args.poses, args.nordland_poses,
                                  parse_frame_range(args.frame_range))
    topic = args.topic or ("/camera/image_raw/compressed" if encoding in COMPRESSED_FORMATS else "/camera/image_raw")
    stamps = sequence.sequence_stamps_ns(frames, args.rate, args.start_stamp)
    skipped: list[str] = []
    count = write_bag(Path(args.out), frames, stamps, topic=topic, encoding=encoding, storage=args.storage,
                      odom_topic=args.odom_topic, frame_id=args.frame_id, odom_frame=args.odom_frame,
                      jpeg_quality=args.jpeg_quality, skipped=skipped if args.skip_invalid else None)
    with_poses = count if frames and frames[0].pose is not None else 0
    print(f"wrote {count} images on {topic} ({encoding})"
          + (f" and {with_poses} odometry messages on {args.odom_topic}" if with_poses else "")
          + f" to {args.out} ({args.storage}), {(stamps[-1] - stamps[0]) / 1e9:.1f} s"
          + (f"; {len(skipped)} unreadable image(s) skipped, first: {skipped[0]}" if skipped else ""))
    return 0


def write_bag(out: Path, frames: list[sequence.Frame], stamps_ns: np.ndarray, *, topic: str, encoding: str,
              storage: str = "sqlite3", odom_topic: str = "/odom", frame_id: str = "camera",
              odom_frame: str = "map", jpeg_quality: int = 90, skipped: list[str] | None = None) -> int:
    """Write ``frames`` (and their poses, where known) as a rosbag2 at ``out``; returns the image count.

    ``skipped``: None = an unreadable image is an error (naming it); a list = such images (and their
    odometry) are left out and their errors appended to it.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out).absolute()
    if out.exists():
        raise ValueError(f"{out} exists already: remove it or choose another --out")
    if len(frames) != len(stamps_ns):
        raise ValueError(f"{len(frames)} frames but {len(stamps_ns)} stamps")
    if any(f.pose is not None for f in frames) and not all(f.pose is not None for f in frames):
        raise ValueError("either every frame has a pose or none does")
    store = bag_io.typestore()
    # rosbag2 names its storage file after the bag directory, so write <tmp>/<name> and move it
    staging = out.parent / f".{out.name}.writing-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    written = 0
    try:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(staging / out.name, version=9, storage_plugin=plugin)
        writer.open()
        image_type = "sensor_msgs/msg/CompressedImage" if encoding in COMPRESSED_FORMATS else "sensor_msgs/msg/Image"
        image_conn = writer.add_connection(topic, image_type, typestore=store)
        odom_conn = (writer.add_connection(odom_topic, "nav_msgs/msg/Odometry", typestore=store)
                     if frames and frames[0].pose is not None else None)
        for frame, stamp in progress(list(zip(frames, stamps_ns)), desc="writing bag", unit="img", leave=False):
            try:
                rgb = read_rgb(frame.path)  # before its odometry: a skipped image takes its pose with it
            except ValueError as e:
                if skipped is None:
                    raise ValueError(f"{e}; leave such images out with --skip-invalid") from None
                skipped.append(str(e))
                continue
            header = header_msg(store, int(stamp), frame_id)
            if odom_conn is not None:
                odom = odometry_msg(store, header_msg(store, int(stamp), odom_frame), frame_id, frame.pose)
                writer.write(odom_conn, int(stamp), store.serialize_cdr(odom, odom_conn.msgtype))
            msg = image_msg(store, header, rgb, encoding, jpeg_quality)
            writer.write(image_conn, int(stamp), store.serialize_cdr(msg, image_type))
            written += 1
        writer.close()
        if not written:
            raise ValueError(f"no image could be written to {out}: every image was unreadable")
        os.rename(staging / out.name, out)
    except (OSError, sqlite3.Error) as e:  # full disk: sqlite3 "database or disk is full", EFBIG, EIO
        reason = describe_os_error(e) if isinstance(e, OSError) else f"{e} (disk full? free space and retry)"
        raise OutputError(f"writing the bag {out} failed: {reason}; nothing was written there") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def header_msg(store, stamp: int, frame_id: str):
    sec, nanosec = split_ns(stamp)
    time = store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return store.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image_msg(store, header, rgb: np.ndarray, encoding: str, jpeg_quality: int):
    if encoding in COMPRESSED_FORMATS:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if encoding == "jpeg" else []
        ok, data = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", bgr, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {encoding}")
        # image_transport's format string: source encoding; codec compressed <stored channel order>
        return store.types["sensor_msgs/msg/CompressedImage"](
            header=header, format=f"bgr8; {encoding} compressed bgr8", data=data.reshape(-1))
    fields = rgb_to_image_fields(rgb, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    fields["is_bigendian"] = int(fields["is_bigendian"])
    return store.types["sensor_msgs/msg/Image"](header=header, **fields)


def odometry_msg(store, header, child_frame_id: str, pose: np.ndarray):
    t = store.types
    geometry = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=float(pose[0]), y=float(pose[1]), z=float(pose[2])),
        orientation=t["geometry_msgs/msg/Quaternion"](x=float(pose[3]), y=float(pose[4]), z=float(pose[5]),
                                                     w=float(pose[6])))
    zero = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return t["nav_msgs/msg/Odometry"](
        header=header, child_frame_id=child_frame_id,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=geometry, covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)))
