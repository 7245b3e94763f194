"""The bag side of ``structvpr build-map --bag``: a bag's images as map items, bad frames named or skipped."""

from __future__ import annotations

from pathlib import Path

from structvpr_ros import bag_io
from structvpr_ros.image_conversion import ImageConversionError, message_to_rgb


class BagFrames:
    """Iterates ``(stamp_ns, frame_id, pose, source, rgb)`` for ``add_encoded``; counts what it left out."""

    def __init__(self, bag: str | Path, topic: str, odom_topic: str, odom_max_offset_s: float, skip_invalid: bool):
        self.bag, self.topic, self.skip_invalid = Path(bag), topic, skip_invalid
        with bag_io.open_bag(self.bag) as reader:
            self.total = sum(c.msgcount for c in bag_io.topic_connections(reader, topic, bag_io.IMAGE_TYPES))
            has_odom = any(bag_io.same_topic(c.topic, odom_topic) for c in reader.connections)
        self.poses = bag_io.read_odometry(self.bag, odom_topic, odom_max_offset_s) if has_odom else None
        self.skipped: list[str] = []  # "image #i (stamps): reason"
        self.unstamped = 0

    def __iter__(self):
        for image in bag_io.image_messages(self.bag, self.topic):
            try:
                rgb = message_to_rgb(image.msg)
            except ImageConversionError as e:
                if not self.skip_invalid:
                    raise ValueError(f"{self.bag}: {image.describe()} on {self.topic} is invalid: {e}; "
                                     f"leave such images out with --skip-invalid") from None
                self.skipped.append(f"{image.describe()}: {e}")
                continue
            self.unstamped += image.header_ns == 0
            pose = self.poses.pose_at(image.stamp_ns) if self.poses is not None else None
            yield image.stamp_ns, image.frame_id, pose, f"{self.topic}#{image.index}", rgb

    def summary(self) -> str:
        """What the map holds differently from the bag, for the closing line ('' when nothing)."""
        notes = []
        if self.unstamped:
            notes.append(f"{self.unstamped} image(s) with header stamp 0 stored with their bag record time")
        if self.skipped:
            notes.append(f"{len(self.skipped)} invalid image(s) skipped, first: {self.skipped[0]}")
        return "".join(f"; {n}" for n in notes)
