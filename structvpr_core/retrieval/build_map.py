"""``structvpr build-map``: encode an image folder or a bag's image topic into a map database.

Each image becomes one keyframe: global descriptor (the model's), stamp, camera frame
id, pose and, with ``--with-features``, ORB features for geometric verification.

- From a folder (``--images``): stamps come from the poses CSV's ``stamp`` column
  when it has one, else ``start + i / rate`` in file order (the same stamps
  ``make-bag`` gives the same folder); poses from ``--poses`` or ``--nordland-poses``.
  Needs no ROS.
- From a bag (``--bag --topic``, a rosbag2 directory or a ROS 1 ``.bag`` file, read by
  ``structvpr_ros.bag_map``): header stamps and frame ids of the images (an image whose
  header stamp is 0 gets its bag record time, as the node uses its arrival time); poses
  from the Odometry on ``--odom-topic`` nearest each image stamp within
  ``--odom-max-offset`` (the node's ``odom_max_offset_s``), when the bag has that topic.
  An image that does not decode stops the build with its index and stamps, or is
  left out with ``--skip-invalid``.

The map remembers the model (name, dim, input size, checkpoint hash): the node refuses
to localise against a map built with another model. Saving is atomic (MapDatabase.save).

Example:
    structvpr build-map --model random-mobilenetv2 --resize 64x32 \\
        --images ../shared/data/nordland64/summer --nordland-poses --frame-range 29000:35760 --out summer_map
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import numpy as np

from structvpr_core.arguments import parse_frame_range, parse_size
from structvpr_core.data import sequence
from structvpr_core.data.images import read_rgb
from structvpr_core.loop_closure.geometry import extract_features
from structvpr_core.progress import progress
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.encoder import load_encoder
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
                        help="--bag: leave out images that do not decode (default: stop at the first, naming it)")
    poses = parser.add_mutually_exclusive_group()
    poses.add_argument("--poses", help="poses CSV for --images: image,x,y[,z][,qx,qy,qz,qw | ,heading][,stamp]")
    poses.add_argument("--nordland-poses", action="store_true", help="pose x = Nordland frame number (--images)")
    parser.add_argument("--out", required=True, help="map directory to write (an existing map there is replaced)")
    parser.add_argument("--resize", help="force this network input size WxH (default: the model's input rule: "
                                         "a pixel budget at the image's aspect, or an older checkpoint's fixed size)")
    parser.add_argument("--frame-range", help="A:B, keep frames numbered A..B (--images only)")
    parser.add_argument("--with-features", action="store_true", help="store ORB features for geometric verification")
    parser.add_argument("--max-features", type=int, default=1000, help="ORB keypoints per image (default 1000)")
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
    if args.max_features < 1:
        raise ValueError(f"--max-features must be >= 1, got {args.max_features}")
    started = time.perf_counter()
    # inputs first: a wrong folder or topic should not wait for the model to load
    if args.images:
        if args.skip_invalid:
            raise ValueError("--skip-invalid applies to --bag; an unreadable file in --images is an error")
        frames = sequence.load_sequence(args.images, args.poses, args.nordland_poses,
                                        parse_frame_range(args.frame_range))
        stamps = sequence.sequence_stamps_ns(frames, args.rate, args.start_stamp).tolist()
        items = ((stamp, args.frame_id, f.pose, f.path.name, read_rgb(f.path)) for f, stamp in zip(frames, stamps))
        total, notes = len(frames), None
    else:
        if args.poses or args.nordland_poses or args.frame_range:
            raise ValueError("--poses, --nordland-poses and --frame-range apply to --images; a bag brings its own")
        from structvpr_ros.bag_map import BagFrames  # rosbags and the image decoders: bags only

        items = notes = BagFrames(args.bag, args.topic, args.odom_topic, args.odom_max_offset, args.skip_invalid)
        total = items.total
    encoder = load_encoder(args.model, args.device, input_size=parse_size(args.resize),
                           runtime=args.runtime, precision=args.precision)
    db = MapDatabase(ModelIdentity.of_encoder(encoder))
    add_encoded(db, encoder, items, total, args.batch_size, args.max_features if args.with_features else None)
    if not len(db):
        raise ValueError(f"no image could be added to the map{notes.summary() if notes else ''}")
    db.save(args.out)
    with_pose = int((~np.isnan(db.poses).any(axis=1)).sum())
    print(f"map {args.out}: {len(db)} keyframes ({with_pose} with pose"
          f"{', ORB features' if args.with_features else ''}), model {db.model.describe()}, "
          f"built in {time.perf_counter() - started:.1f} s{notes.summary() if notes else ''}")
    return 0


def add_encoded(db: MapDatabase, encoder, items, total: int, batch_size: int, max_features: int | None) -> None:
    """Encode ``(stamp_ns, frame_id, pose, source, rgb)`` items in batches and add them to ``db``."""
    items = iter(items)
    with progress(total=total, desc="building map", unit="img") as bar:
        while batch := list(islice(items, batch_size)):
            stamps, frame_ids, poses, sources, images = zip(*batch)
            features = [extract_features(img, max_features) for img in images] if max_features else None
            db.add_batch(encoder.encode(list(images)), stamps, frame_ids, poses, features, sources)
            bar.update(len(batch))
