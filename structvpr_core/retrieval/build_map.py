"""``structvpr build-map``: encode an image folder or a bag's image topic into a map database.

Each image becomes one keyframe: global descriptor (the model's), stamp, camera frame
id, pose and, with ``--with-features``, local features for geometric verification
(``--features orb | xfeat``: the node's ``verification_features`` must name the same kind).

- From a folder (``--images``): stamps come from the poses CSV's ``stamp`` column
  when it has one, else ``start + i / rate`` in file order (the same stamps
  ``make-bag`` gives the same folder); poses from ``--poses`` or ``--nordland-poses``.
  Needs no ROS.
- From a bag (``--bag --topic``, a rosbag2 directory or a ROS 1 ``.bag`` file, read by
  ``structvpr_ros.bag_map``): header stamps and frame ids of the images (an image whose
  header stamp is 0 gets its bag record time, as the node uses its arrival time); poses
  from the Odometry on ``--odom-topic`` nearest each image stamp within
  ``--odom-max-offset`` (the node's ``odom_max_offset_s``), when the bag has that topic.
- An image that cannot be read or decoded stops the build naming it (file, or bag index and
  stamps), or is left out with ``--skip-invalid``. Featureless images (lens cap, darkness,
  uniform: ``runtime.featureless``, as in the node) are always left out and counted.
- ``--out`` is checked before any work (a file there, an unwritable parent, a directory that
  is not a map); a save that fails at the end (full disk) names the path and the reason.

The map remembers the model (name, dim, input size, checkpoint hash): the node refuses
to localise against a map built with another model. Saving is atomic (MapDatabase.save).

Example:
    structvpr build-map --model random-mobilenetv2 --resize 64x32 \\
        --images ../shared/data/nordland64/summer --nordland-poses --frame-range 29000:35760 --out summer_map
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from itertools import islice

import numpy as np

from structvpr_core.arguments import parse_frame_range, parse_size
from structvpr_core.data import sequence
from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import OutputError, check_output_dir, describe_os_error
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.loop_closure.geometry import MAX_FEATURES
from structvpr_core.loop_closure.local_features import FEATURE_KINDS, FeatureExtractor
from structvpr_core.progress import progress
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.runtime.featureless import featureless_reason
from structvpr_core.runtime.options import add_inference_arguments

DEFAULT_ODOM_MAX_OFFSET_S = 0.1  # the node's odom_max_offset_s default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint (a path, or a shipped checkpoint's bare file name) or a baseline "
                             "(structvpr benchmark --help lists them)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (ordered by frame number or name)")
    source.add_argument("--bag", help="rosbag2 directory or ROS 1 .bag file with an image topic")
    parser.add_argument("--topic", default="/camera/image_raw", help="image topic in --bag (default /camera/image_raw)")
    parser.add_argument("--odom-topic", default="/odom", help="odometry topic in --bag for poses (default /odom)")
    parser.add_argument("--odom-max-offset", type=float, default=DEFAULT_ODOM_MAX_OFFSET_S,
                        help="--bag: an image takes the odometry pose nearest its stamp within this many seconds "
                             f"(default {DEFAULT_ODOM_MAX_OFFSET_S:g}, the node's odom_max_offset_s)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave out images that cannot be read or decoded (default: stop at the first, naming it)")
    poses = parser.add_mutually_exclusive_group()
    poses.add_argument("--poses", help="poses CSV for --images: image,x,y[,z][,qx,qy,qz,qw | ,heading][,stamp]")
    poses.add_argument("--nordland-poses", action="store_true", help="pose x = Nordland frame number (--images)")
    parser.add_argument("--out", required=True, help="map directory to write (an existing map there is replaced)")
    parser.add_argument("--resize", help="force this network input size WxH (default: the model's input rule: "
                                         "a pixel budget at the image's aspect, or an older checkpoint's fixed size)")
    parser.add_argument("--frame-range", help="A:B, keep frames numbered A..B (--images only)")
    parser.add_argument("--with-features", action="store_true", help="store local features for geometric verification")
    node = LoopClosureConfig().geometry  # the node's defaults: a map the shipped node can verify against
    parser.add_argument("--features", choices=FEATURE_KINDS, default=node.features,
                        help=f"--with-features: local-feature kind (default {node.features}, the node's "
                             f"verification_features)")
    parser.add_argument("--max-features", type=int, default=node.max_features,
                        help=f"keypoints per image (default {node.max_features}, the node's max_features)")
    parser.add_argument("--xfeat-max-image-width", type=int, default=node.max_image_width,
                        help="--features xfeat: images are shrunk to this width for the network, and "
                             f"narrower ones enlarged to it or to {node.min_image_width}, whichever is smaller "
                             f"(default {node.max_image_width}, the node's xfeat_max_image_width)")
    parser.add_argument("--rate", type=float, default=sequence.DEFAULT_RATE_HZ,
                        help="--images without CSV stamps: frames per second of the synthetic stamps (default 10)")
    parser.add_argument("--start-stamp", type=float, default=sequence.DEFAULT_START_S,
                        help="stamp of the first --images frame, seconds")
    parser.add_argument("--frame-id", default="camera", help="camera frame id of --images keyframes (default camera)")
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available)")
    add_inference_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 1 <= args.max_features <= MAX_FEATURES:
        raise ValueError(f"--max-features must be in 1..{MAX_FEATURES}, got {args.max_features}")
    if args.xfeat_max_image_width < 64:
        raise ValueError(f"--xfeat-max-image-width must be >= 64, got {args.xfeat_max_image_width}")
    started = time.perf_counter()
    check_map_output(args.out)  # the output, then the inputs: neither should wait for the model to load
    if args.images:
        frames = sequence.load_sequence(args.images, args.poses, args.nordland_poses,
                                        parse_frame_range(args.frame_range))
        stamps = sequence.sequence_stamps_ns(frames, args.rate, args.start_stamp).tolist()
        items = notes = FolderFrames(frames, stamps, args.frame_id, args.skip_invalid)
        total = len(frames)
    else:
        if args.poses or args.nordland_poses or args.frame_range:
            raise ValueError("--poses, --nordland-poses and --frame-range apply to --images; a bag brings its own")
        from structvpr_ros.bag_map import BagFrames  # rosbags and the image decoders: bags only

        items = notes = BagFrames(args.bag, args.topic, args.odom_topic, args.odom_max_offset, args.skip_invalid)
        total = items.total
    encoder = load_encoder(args.model, args.device, input_size=parse_size(args.resize),
                           runtime=args.runtime, precision=args.precision)
    db = MapDatabase(ModelIdentity.of_encoder(encoder))
    # the node's settings but for the flags: the map's features are what the shipped node extracts;
    # a --xfeat-max-image-width below the node's enlargement width caps that too (network width = it)
    node = LoopClosureConfig().geometry
    extractor = (FeatureExtractor.from_config(replace(node, features=args.features, max_features=args.max_features,
                                                      max_image_width=args.xfeat_max_image_width,
                                                      min_image_width=min(node.min_image_width,
                                                                          args.xfeat_max_image_width)))
                 if args.with_features else None)
    featureless = add_encoded(db, encoder, items, total, args.batch_size, extractor)
    summary = notes.summary() + (f"; {len(featureless)} featureless image(s) left out, first: {featureless[0]}"
                                 if featureless else "")
    if not len(db):
        raise ValueError(f"no image could be added to the map{summary}")
    try:
        db.save(args.out)
    except OSError as e:
        raise OutputError(f"writing the map to {args.out} failed: {describe_os_error(e)}; "
                          f"nothing was written there") from None
    with_pose = int((~np.isnan(db.poses).any(axis=1)).sum())
    print(f"map {args.out}: {len(db)} keyframes ({with_pose} with pose"
          f"{f', {args.features} features {db.feature_bytes_per_keyframe() / 1024:.1f} KiB/keyframe' if args.with_features else ''}), "
          f"model {db.model.describe()}, "
          f"built in {time.perf_counter() - started:.1f} s{summary}")
    return 0


def check_map_output(out: str) -> None:
    """``--out`` must be a map directory, or a path where one can be created (``OutputError`` otherwise)."""
    path = check_output_dir(out, "--out")
    if path.is_dir() and any(path.iterdir()) and not (path / "meta.json").is_file():
        raise OutputError(f"--out {out} exists and is not a map directory (no meta.json): refusing to replace it")


class FolderFrames:
    """``(stamp_ns, frame_id, pose, source, rgb)`` items of an image folder; counts the files left out."""

    def __init__(self, frames, stamps_ns, frame_id: str, skip_invalid: bool):
        self.frames, self.stamps, self.frame_id, self.skip_invalid = frames, stamps_ns, frame_id, skip_invalid
        self.skipped: list[str] = []

    def __iter__(self):
        for frame, stamp in zip(self.frames, self.stamps):
            try:
                rgb = read_rgb(frame.path)
            except ValueError as e:  # unreadable, empty or corrupt: the message names the file
                if not self.skip_invalid:
                    raise ValueError(f"{e}; leave such images out with --skip-invalid") from None
                self.skipped.append(str(e))
                continue
            yield stamp, self.frame_id, frame.pose, frame.path.name, rgb

    def summary(self) -> str:
        return f"; {len(self.skipped)} unreadable image(s) skipped, first: {self.skipped[0]}" if self.skipped else ""


def add_encoded(db: MapDatabase, encoder, items, total: int, batch_size: int,
                extractor: FeatureExtractor | None) -> list[str]:
    """Encode ``(stamp_ns, frame_id, pose, source, rgb)`` items in batches and add them to ``db``
    (with ``extractor``'s local features when given).

    Featureless images are left out (every model would describe them alike, so they would match
    each other and every dark query); returns ``"source: reason"`` for each.
    """
    featureless: list[str] = []

    def describable():
        for item in items:
            reason = featureless_reason(item[4])
            if reason:
                featureless.append(f"{item[3]}: {reason}")
                bar.update(1)
            else:
                yield item

    with progress(total=total, desc="building map", unit="img") as bar:
        kept = describable()
        while batch := list(islice(kept, batch_size)):
            stamps, frame_ids, poses, sources, images = zip(*batch)
            features = [extractor(img) for img in images] if extractor is not None else None
            db.add_batch(encoder.encode(list(images)), stamps, frame_ids, poses, features, sources)
            bar.update(len(batch))
    return featureless
