"""``structvpr build-map``: encode an image folder or a bag's image topic into a map database.

Each image becomes one keyframe: global descriptor (the model's), stamp, camera frame
id, pose and, with ``--with-features``, ORB features for geometric verification.

- From a folder (``--images``): stamps come from the poses CSV's ``stamp`` column
  when it has one, else ``start + i / rate`` in file order (the same stamps
  ``make-bag`` gives the same folder); poses from ``--poses`` or ``--nordland-poses``.
- From a bag (``--bag --topic``): header stamps and frame ids of the images; poses
  from the Odometry on ``--odom-topic`` with the same header stamp (when the bag has
  that topic).

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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from structvpr_core.cli import parse_frame_range, parse_size
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.runtime.options import add_inference_arguments
from structvpr_core.loop_closure.geometry import extract_features
from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_ros import bag_io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint file, or baseline raw-pixel | random-mobilenetv2")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (ordered by frame number or name)")
    source.add_argument("--bag", help="rosbag2 directory with an image topic")
    parser.add_argument("--topic", default="/camera/image_raw", help="image topic in --bag (default /camera/image_raw)")
    parser.add_argument("--odom-topic", default="/odom", help="odometry topic in --bag for poses (default /odom)")
    poses = parser.add_mutually_exclusive_group()
    poses.add_argument("--poses", help="poses CSV for --images: image,x,y[,z][,qx,qy,qz,qw | ,heading][,stamp]")
    poses.add_argument("--nordland-poses", action="store_true", help="pose x = Nordland frame number (--images)")
    parser.add_argument("--out", required=True, help="map directory to write (an existing map there is replaced)")
    parser.add_argument("--resize", help="WxH the network is fed (default: the model's own input size)")
    parser.add_argument("--frame-range", help="A:B, keep frames numbered A..B (--images only)")
    parser.add_argument("--with-features", action="store_true", help="store ORB features for geometric verification")
    parser.add_argument("--max-features", type=int, default=1000, help="ORB keypoints per image (default 1000)")
    parser.add_argument("--rate", type=float, default=bag_io.DEFAULT_RATE_HZ,
                        help="--images without CSV stamps: frames per second of the synthetic stamps (default 10)")
    parser.add_argument("--start-stamp", type=float, default=bag_io.DEFAULT_START_S,
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
        frames = bag_io.load_sequence(args.images, args.poses, args.nordland_poses,
                                      parse_frame_range(args.frame_range))
        stamps = bag_io.sequence_stamps_ns(frames, args.rate, args.start_stamp).tolist()
        items = ((stamp, args.frame_id, f.pose, f.path.name, read_rgb(f.path)) for f, stamp in zip(frames, stamps))
        total = len(frames)
    else:
        if args.poses or args.nordland_poses or args.frame_range:
            raise ValueError("--poses, --nordland-poses and --frame-range apply to --images; a bag brings its own")
        items, total = _bag_items(Path(args.bag), args.topic, args.odom_topic)
    encoder = load_encoder(args.model, args.device, input_size=parse_size(args.resize),
                           runtime=args.runtime, precision=args.precision)
    db = MapDatabase(ModelIdentity.of_encoder(encoder, args.model))
    add_encoded(db, encoder, items, total, args.batch_size, args.max_features if args.with_features else None)
    db.save(args.out)
    with_pose = int((~np.isnan(db.poses).any(axis=1)).sum())
    print(f"map {args.out}: {len(db)} keyframes ({with_pose} with pose"
          f"{', ORB features' if args.with_features else ''}), model {db.model.describe()}, "
          f"built in {time.perf_counter() - started:.1f} s")
    return 0


def _bag_items(bag: Path, topic: str, odom_topic: str):
    with bag_io.open_bag(bag) as reader:
        total = sum(c.msgcount for c in bag_io.topic_connections(reader, topic, bag_io.IMAGE_TYPES))
        has_odom = any(c.topic == odom_topic for c in reader.connections)
    poses = bag_io.read_odometry(bag, odom_topic) if has_odom else {}
    items = ((stamp, frame_id, poses.get(stamp), f"{topic}#{i}", rgb)
             for i, (stamp, frame_id, rgb) in enumerate(bag_io.read_images(bag, topic)))
    return items, total


def add_encoded(db: MapDatabase, encoder, items, total: int, batch_size: int, max_features: int | None) -> None:
    """Encode ``(stamp_ns, frame_id, pose, source, rgb)`` items in batches and add them to ``db``."""
    items = iter(items)
    with tqdm(total=total, desc="building map", unit="img") as progress:
        while batch := list(islice(items, batch_size)):
            stamps, frame_ids, poses, sources, images = zip(*batch)
            features = [extract_features(img, max_features) for img in images] if max_features else None
            db.add_batch(encoder.encode(list(images)), stamps, frame_ids, poses, features, sources)
            progress.update(len(batch))
