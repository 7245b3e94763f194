"""Writing small rosbag2 files with exactly the image messages a test needs (stamps chosen freely)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from structvpr_ros.bag_io import typestore
from structvpr_ros.image_conversion import rgb_to_image_fields
from structvpr_ros.stamps import split_ns


def write_image_bag(path: Path, images: list, header_stamps_ns: list[int], record_stamps_ns: list[int],
                    topic: str, frame_id: str = "cam") -> None:
    """One message per image: an RGB array becomes an rgb8 Image, ``bytes`` a jpeg CompressedImage
    (all images of a bag must be of one kind); header and record stamps as given."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    compressed = isinstance(images[0], bytes)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for image, header_ns, record_ns in zip(images, header_stamps_ns, record_stamps_ns, strict=True):
            sec, nanosec = split_ns(header_ns)
            header = store.types["std_msgs/msg/Header"](
                stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)
            if compressed:
                msg = store.types[msgtype](header=header, format="jpeg", data=np.frombuffer(image, np.uint8))
            else:
                fields = rgb_to_image_fields(image, "rgb8")
                fields["data"] = np.frombuffer(fields["data"], np.uint8)
                fields["is_bigendian"] = int(fields["is_bigendian"])
                msg = store.types[msgtype](header=header, **fields)
            writer.write(conn, record_ns, store.serialize_cdr(msg, msgtype))
