"""Writing small rosbag2 files with exactly the image messages a test needs (stamps chosen freely)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from structvpr_ros.bag_io import typestore
from structvpr_ros.make_bag import header_msg, image_msg, odometry_msg


def write_image_bag(path: Path, images: list, header_stamps_ns: list[int], record_stamps_ns: list[int],
                    topic: str, frame_id: str = "cam", odometry: dict[int, float] | None = None) -> None:
    """One message per image: an RGB array becomes an rgb8 Image, ``bytes`` a jpeg CompressedImage
    (all images of a bag must be of one kind); header and record stamps as given. ``odometry``:
    stamp (ns) -> x of an Odometry on /odom (written first, recorded at its stamp)."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    compressed = isinstance(images[0], bytes)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9) as writer:
        if odometry:
            odom_conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
            for stamp, x in odometry.items():
                msg = odometry_msg(store, header_msg(store, stamp, "map"), frame_id, np.array([x, 0, 0, 0, 0, 0, 1.0]))
                writer.write(odom_conn, stamp, store.serialize_cdr(msg, odom_conn.msgtype))
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for image, header_ns, record_ns in zip(images, header_stamps_ns, record_stamps_ns, strict=True):
            header = header_msg(store, header_ns, frame_id)
            if compressed:
                msg = store.types[msgtype](header=header, format="jpeg", data=np.frombuffer(image, np.uint8))
            else:
                msg = image_msg(store, header, image, "rgb8", jpeg_quality=90)
            writer.write(conn, record_ns, store.serialize_cdr(msg, msgtype))
