"""``structvpr replay``: play a bag into the live node and score the loop closures it publishes.

Two modes, as the node has:
- ``--mode localization`` (default): the node queries a fixed ``--map`` built earlier;
- ``--mode mapping``: one run that revisits places. The node starts from an empty map (or a
  copy of ``--map``: the user's map is never changed), every image queries the map built so
  far and is then added. This is what SLAM users live with: most images are new places.

What happens:
1. The bag (a rosbag2 directory or a ROS 1 ``.bag`` file) is indexed with rosbags: the
   stamp of every image (its header stamp; its record time when the header stamp is 0,
   as the node then uses its arrival time) and the odometry pose nearest it within the
   node's ``odom_max_offset_s``.
2. The real ``StructVPRNode`` starts — in this process on its own executor thread
   (default), or as a separate process (``--separate-process``, ``python -m
   structvpr_ros.node``) — with ``--params`` plus the overrides listed below.
3. The bag's image and odometry messages are published on their topics (RELIABLE QoS,
   the bag's CDR bytes as they are, like ``ros2 bag play``; ROS 1 data converted to
   CDR), each preceded by ``/clock`` (rosgraph_msgs/Clock) at the message's bag time;
   the node runs with ``use_sim_time``. Every ``LoopClosure`` on
   ``/structvpr_node/loop_closure`` is recorded and matched to its image: by header
   stamp when every image has its own non-zero stamp, else (localization only: stamps 0
   or repeated) by ``query_id``, the image's number among those the node received —
   checked against the node's received count and every non-zero stamp.
4. Ground truth (``structvpr_core.evaluation.ground_truth``): from poses (the bag's
   odometry at each image stamp; localization: map keyframes within ``--gt-radius``;
   mapping: earlier keyframes of the run within the radius and older than the params'
   ``exclude_recent_s``), or from a file (localization: CSV ``query_stamp_ns,map_id``;
   mapping: CSV ``stamp_a_ns,stamp_b_ns`` pairs or a loop matrix over the bag's images),
   or none (``--gt none``: replayed and reported, not scored).
5. Scoring (``structvpr_core.evaluation.loop_scoring``): every query counts; one without a
   true match that publishes anything is a false positive. Reported: the loop closures
   the params file's operating point publishes (precision, recall, wrong ones and how many
   of them on new places), the precision-recall curve over the final score with PR-AUC
   and recall@100%P, Recall@N, the worst false positives. Frames the node never
   answered count as misses.
6. Frames sent vs answered (drops), round-trip latency (image published -> its
   LoopClosure received), the candidates published for every image, the node's own
   counters from /diagnostics; JSON report and PR-curve PNG.

Pacing. Messages are published at the bag's pace times ``--rate-scale`` (2 = twice as
fast; 0 = no pacing). With ``--max-in-flight N`` (default 1) an image is published only
while fewer than N earlier images await their answer, so the node is never fed faster
than it processes and every frame is a query; waiting shifts the rest of the schedule
(no catch-up burst). ``--max-in-flight 0`` publishes strictly on the bag's schedule: a
node slower than the bag then drops frames (it keeps only the newest), which is how
drops are measured. An image unanswered after ``--answer-timeout`` seconds is given up.

Parameters. The params file is honoured; a command-line flag overrides it only when
given (``--sequence-*``). Replay forces: mode, map_dir, model, input size (``--resize``,
default: the map's input rule), device, the bag's topics, use_sim_time=true,
keyframe_min_interval_s=keyframe_min_distance_m=0 (every image is a keyframe and a
query), consistency_k=1, and the score thresholds open (score_threshold=-1,
sequence_score_threshold=-1e9) so the curve can sweep them. The operating point is then
computed exactly from what the node published: the thresholds only remove candidates
from its ranked list, so the params file's loop closure is the first candidate that
passes them (and, with ``verification: require``, is verified). With verification the
curve sweeps the inliers of the candidates that pass the score thresholds; without, the
score (cosine, or the sequence z-score).

Example:
    structvpr replay --mode mapping --bag run.bag --model lite0_realres_none_seed2_fp16.pt --gt-radius 2 \\
        --out report.json --plot pr.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from structvpr_core.arguments import (CliError, add_sequence_arguments, fill_sequence_arguments, parse_size,
                                      sequence_config_from_args)
from structvpr_core.config import load_yaml
from structvpr_core.evaluation import ground_truth
from structvpr_core.evaluation.loop_scoring import QueryOutcome, score_run, summary_line
from structvpr_core.evaluation.metrics import plot_pr
from structvpr_core.io_utils import atomic_write_text
from structvpr_core.paths import REPO_ROOT
from structvpr_core.progress import progress
from structvpr_core.retrieval.map_database import MapDatabase
from structvpr_core.runtime.options import add_inference_arguments
from structvpr_ros import bag_io
from structvpr_ros.stamps import ns_to_stamp, stamp_to_ns

NODE_NAME = "structvpr_node"
LOOP_TOPIC = f"/{NODE_NAME}/loop_closure"
DEFAULT_PARAMS = REPO_ROOT / "config" / "structvpr.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True,
                        help="rosbag2 directory or ROS 1 .bag file (images, optionally odometry)")
    parser.add_argument("--mode", choices=("localization", "mapping"), default="localization",
                        help="localization: query a fixed --map; mapping: one run that builds its map as it goes "
                             "(empty, or starting from a copy of --map) and is scored on its own revisits")
    parser.add_argument("--map", help="map directory (structvpr build-map); required for localization")
    parser.add_argument("--model", required=True,
                        help="checkpoint (a path, or a shipped checkpoint's bare file name) or a baseline "
                             "(structvpr benchmark --help lists them)")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="node parameters YAML (default config/structvpr.yaml)")
    parser.add_argument("--topic", help="image topic in the bag (default: its only Image/CompressedImage topic)")
    parser.add_argument("--odom-topic", help="odometry topic in the bag (default: its only Odometry topic, if any)")
    parser.add_argument("--resize", help="WxH fed to the network (default: the map's input rule: the size it was "
                                         "built with, or the model's own)")
    parser.add_argument("--device", default="auto", help="torch device of the node (default auto)")
    add_inference_arguments(parser)
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="playback speed relative to the bag (default 1; 0 = no pacing)")
    parser.add_argument("--max-in-flight", type=int, default=1,
                        help="images awaiting an answer before publishing waits (default 1; 0 = never wait)")
    parser.add_argument("--answer-timeout", type=float, default=10.0,
                        help="seconds to wait for an image's answer before giving it up (default 10)")
    parser.add_argument("--gt", default="poses",
                        help="'poses' (bag odometry vs map poses; mapping: vs the run's earlier keyframes outside "
                             "the exclusion window), a file, or 'none' (replay and report latency, drops and "
                             "candidates without scoring). Files: localization, CSV query_stamp_ns,map_id; mapping, "
                             "CSV stamp_a_ns,stamp_b_ns (pairs of bag images at the same place) or a loop matrix "
                             "over the bag's images (.npy / .csv / .txt, nonzero = same place)")
    parser.add_argument("--gt-radius", type=float, nargs="+", default=[25.0],
                        help="pose ground truth: correct if within this distance; several values = several "
                             "reports (default 25; Nordland frame units: 10 = soft, 0 = exact frame)")
    parser.add_argument("--separate-process", action="store_true", help="run the node as its own process")
    parser.add_argument("--out", default="replay_report.json", help="JSON report (default replay_report.json)")
    parser.add_argument("--plot", help="PR-curve PNG (default: next to --out, <stem>_pr.png)")
    add_sequence_arguments(parser, from_params=True)


# ------------------------------------------------------------------ bag index


@dataclass
class BagIndex:
    image_topic: str  # as the bag spells it
    image_type: str
    odom_topic: str | None
    stamps_ns: list[int]  # per image, bag order: header stamp, or record time when that is 0
    stamped: list[bool]  # per image: its header stamp is not 0
    poses: list[np.ndarray | None]  # odometry pose nearest each image stamp (None: none within the offset)
    odom_max_offset_s: float
    duration_s: float

    @property
    def match_by_stamp(self) -> bool:
        """Answers carry the image stamp; it identifies the image when no two share one and none is 0."""
        return all(self.stamped) and len(set(self.stamps_ns)) == len(self.stamps_ns)


def index_bag(path: Path, image_topic: str | None, odom_topic: str | None, odom_max_offset_s: float) -> BagIndex:
    with bag_io.open_bag(path) as reader:
        image_topic = _bag_topic(reader, image_topic, bag_io.IMAGE_TYPES, "image", required=True)
        odom_topic = _bag_topic(reader, odom_topic, bag_io.ODOMETRY_TYPES, "odometry", required=False)
        image_type = bag_io.topic_connections(reader, image_topic, bag_io.IMAGE_TYPES)[0].msgtype
        duration_s = reader.duration / 1e9
    images = [(m.stamp_ns, m.header_ns) for m in bag_io.image_messages(path, image_topic)]
    if not images:
        raise ValueError(f"{path}: topic {image_topic} has no messages")
    stamps = [s for s, _ in images]
    odometry = bag_io.read_odometry(path, odom_topic, odom_max_offset_s) if odom_topic else None
    poses = [odometry.pose_at(s) if odometry is not None else None for s in stamps]
    return BagIndex(image_topic, image_type, odom_topic, stamps, [h != 0 for _, h in images], poses,
                    odom_max_offset_s, duration_s)


def _bag_topic(reader, topic: str | None, types: tuple[str, ...], what: str, required: bool) -> str | None:
    """The bag's spelling of ``topic`` (checked), or its only topic of ``types``."""
    if topic is not None:
        return bag_io.topic_connections(reader, topic, types)[0].topic
    topics = sorted({c.topic for c in reader.connections if c.msgtype in types})
    if len(topics) == 1:
        return topics[0]
    if not topics and not required:
        return None
    raise ValueError(f"{reader.paths[0]}: {'no' if not topics else 'several'} {what} topics "
                     f"({', '.join(topics) or 'none'}); choose one with --{'topic' if what == 'image' else 'odom-topic'}")


# ------------------------------------------------------------------ ground truth + metrics


@dataclass
class PublishedCandidate:
    map_id: int
    score: float  # cosine, or sequence score when sequence_match
    inliers: int  # -1: not verified
    verified: bool
    sequence_match: bool


@dataclass
class Answer:
    received: float  # time.monotonic()
    stamp_ns: int  # LoopClosure header stamp: the image's (its arrival time when it had none)
    query_id: int  # localization: the image's number among those the node received; mapping: its map id
    candidates: list[PublishedCandidate]  # best first


def bag_positions(index: BagIndex) -> np.ndarray:
    """(N, 3) odometry position per image; refuses a bag where some image has none."""
    missing = sum(p is None for p in index.poses)
    if missing:
        where = f"odometry on {index.odom_topic}" if index.odom_topic else "an odometry topic"
        raise ValueError(f"--gt poses: {missing} of {len(index.poses)} images have no pose ({where} within "
                         f"{index.odom_max_offset_s:g} s of their stamp); make the bag with poses, give --gt FILE, "
                         f"or replay without scoring with --gt none")
    return np.array([p[:3] for p in index.poses], np.float64)


def localization_truth(args, index: BagIndex, db: MapDatabase) -> dict[str, list[np.ndarray]]:
    if args.gt == "none":
        return {}
    if args.gt == "poses":
        positions = bag_positions(index)
        if np.isnan(db.poses[:, :3]).any(axis=1).all():
            raise ValueError("--gt poses: the map's keyframes have no poses; build it with poses, give --gt FILE, "
                             "or replay without scoring with --gt none")
        return {f"poses, radius {r:g}": ground_truth.within_radius(positions, db.poses[:, :3], r)
                for r in args.gt_radius}
    return {f"file {Path(args.gt).name}": ground_truth.map_ids_csv(Path(args.gt), index.stamps_ns, len(db))}


def mapping_truth(args, index: BagIndex, start: MapDatabase | None, answers: list[Answer | None],
                  exclude_recent_s: float) -> dict[str, list[np.ndarray]]:
    """Per image, the map ids of its true revisits: keyframes that entered the map before it (the
    starting map's, then the run's), within the radius, older than the exclusion window."""
    if args.gt == "none":
        return {}
    n0 = 0 if start is None else len(start)
    map_ids = [None if a is None else a.query_id for a in answers]
    if args.gt != "poses":
        path = Path(args.gt)
        partners = (ground_truth.pairs_csv(path, index.stamps_ns) if path.suffix == ".csv" and _has_pair_header(path)
                    else ground_truth.loop_matrix(path, len(index.stamps_ns)))
        return {f"file {path.name}": ground_truth.revisits_from_partners(partners, map_ids, index.stamps_ns,
                                                                         exclude_recent_s)}
    positions = bag_positions(index)
    # keyframes in map order: the starting map's rows, then the images the node answered (their map ids)
    stamps = np.full(n0 + len(answers), np.iinfo(np.int64).max, np.int64)
    xyz = np.full((n0 + len(answers), 3), np.nan)
    if start is not None:
        stamps[:n0], xyz[:n0] = start.stamps_ns, start.poses[:, :3]
    for k, a in enumerate(answers):
        if a is not None:
            stamps[a.query_id], xyz[a.query_id] = index.stamps_ns[k], positions[k]
    out = {}
    for r in args.gt_radius:
        per_id = ground_truth.revisits(stamps, xyz, r, exclude_recent_s)
        out[f"poses, radius {r:g}"] = [np.empty(0, np.int64) if a is None else per_id[a.query_id] for a in answers]
    return out


def _has_pair_header(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "stamp_a_ns" in f.readline()


def outcome(answer: Answer | None, params: dict) -> QueryOutcome | None:
    """What the node published for one image, scored at the params file's thresholds.

    The node ran with its score thresholds open (replay sweeps them); the candidate it would
    have published at the file's parameters is the first that passes them, since the
    thresholds only remove candidates from the ranked list. With verification the sweep runs
    over the inliers of the candidates that pass the score thresholds; without, over the score.
    """
    if answer is None:
        return None
    def above_threshold(c: PublishedCandidate) -> bool:
        return c.score >= params["sequence_score_threshold" if c.sequence_match else "score_threshold"]

    verified_run = any(c.inliers >= 0 for c in answer.candidates)
    ranked = [c for c in answer.candidates if above_threshold(c)] if verified_run else answer.candidates
    published = next((c.map_id for c in answer.candidates
                      if above_threshold(c) and (params["verification"] != "require" or c.verified)), None)
    top = ranked[0] if ranked else None
    details = {} if top is None else {"score": round(top.score, 4), "inliers": top.inliers}
    return QueryOutcome([(c.map_id, float(c.inliers) if verified_run else c.score) for c in ranked], published, details)


# ------------------------------------------------------------------ running the node


def node_overrides(args, index: BagIndex, db: MapDatabase | None, map_dir: str) -> dict:
    """What replay sets on top of the params file (``args`` sequence options already filled from it)."""
    size = parse_size(args.resize) if args.resize else (db.model.input_size if db is not None else None)
    compressed = index.image_type.endswith("CompressedImage")
    sequence = sequence_config_from_args(args, args.model)
    return {
        "mode": args.mode,
        "map_dir": map_dir,
        "model": args.model,
        "input_width": int(size[0]) if size else 0,
        "input_height": int(size[1]) if size else 0,
        "device": args.device,
        "runtime": args.runtime,
        "precision": args.precision,
        "image_topic": "" if compressed else index.image_topic,
        "compressed_topic": index.image_topic if compressed else "",
        "odom_topic": index.odom_topic or "",
        "use_sim_time": True,
        "score_threshold": -1.0,
        "keyframe_min_interval_s": 0.0,
        "keyframe_min_distance_m": 0.0,
        "consistency_k": 1,
        "sequence_length": sequence.length,
        "sequence_min_velocity": sequence.min_velocity,
        "sequence_max_velocity": sequence.max_velocity,
        "sequence_velocity_steps": sequence.velocity_steps,
        "sequence_reverse": sequence.reverse,
        "sequence_normalization": sequence.normalization,
        "sequence_score_threshold": -1e9,
    }


class InProcessNode:
    """The node in this process, spinning on its own executor thread."""

    def __init__(self, context, params_file: Path, overrides: dict):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        from structvpr_ros.node import StartupError, StructVPRNode

        try:
            self.node = StructVPRNode(context=context, cli_args=["--ros-args", "--params-file", str(params_file)],
                                      parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        except StartupError as e:
            raise ValueError(f"the node refused to start: {e}") from None
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="structvpr_node_executor", daemon=True)
        self.thread.start()

    def check_alive(self) -> None:
        if not self.thread.is_alive():
            raise RuntimeError("the in-process node's executor stopped")

    def stop(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()


class NodeProcess:
    """The node as ``python -m structvpr_ros.node``; its output goes to ``log_path``."""

    def __init__(self, params_file: Path, overrides: dict, log_path: Path):
        cmd = [sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", str(params_file)]
        for key, value in overrides.items():
            # -p values are YAML: JSON spelling keeps strings strings and bools bools
            cmd += ["-p", f"{key}:={json.dumps(value)}"]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self._log.flush()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ValueError(f"the node process exited with code {self.proc.returncode}: " + " | ".join(tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Recorder:
    """LoopClosure answers and /diagnostics, filled by the player's executor thread.

    Answers are keyed by header stamp (``by_stamp``) or by ``query_id`` (the node's image
    number in localization mode), whichever identifies the images being played.
    """

    by_stamp: bool = True
    answers: dict[int, Answer] = field(default_factory=dict)
    diagnostics: dict[str, int | float | str] | None = None
    diagnostics_at: float = 0.0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def on_loop_closure(self, msg) -> None:
        answer = Answer(time.monotonic(), stamp_to_ns(msg.header.stamp), int(msg.query_id),
                        [PublishedCandidate(int(c.map_id), float(c.score), int(c.inliers), bool(c.verified),
                                            bool(c.sequence_match)) for c in msg.candidates])
        with self.changed:
            self.answers.setdefault(answer.stamp_ns if self.by_stamp else answer.query_id, answer)
            self.changed.notify_all()

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == NODE_NAME:
                with self.changed:
                    self.diagnostics = {kv.key: _number_or_text(kv.value) for kv in status.values}
                    self.diagnostics_at = time.monotonic()
                    self.changed.notify_all()


def _number_or_text(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class ReplaySession:
    """A player and one warm node on a private rclpy context: what replay and the node benchmark share.

    The player publishes images (``compressed``: CompressedImage) on ``image_topic``,
    Odometry on ``odom_topic`` and ``/clock``, and records the node's LoopClosure and
    /diagnostics messages in ``recorder``; it spins on its own executor thread. The node
    runs in this process (own executor thread) or as its own process. ``with`` returns once
    the node is subscribed to the images and its loop-closure publisher reaches the player.
    """

    def __init__(self, params_file: Path, overrides: dict, *, image_topic: str, compressed: bool,
                 recorder: Recorder, odom_topic: str | None = None, separate_process: bool = False,
                 log_path: Path | None = None, startup_timeout_s: float = 120.0):
        if separate_process and log_path is None:
            raise ValueError("a separate node process needs a log path")
        self.params_file, self.overrides, self.recorder = params_file, overrides, recorder
        self.image_topic, self.compressed, self.odom_topic = image_topic, compressed, odom_topic
        self.separate_process, self.log_path, self.startup_timeout_s = separate_process, log_path, startup_timeout_s
        self.node = self.player = self.executor = self.context = None
        self.startup_s = float("nan")

    def __enter__(self) -> ReplaySession:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image
        from structvpr_msgs.msg import LoopClosure

        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.player = rclpy.create_node("structvpr_replay", context=self.context)
            self.player.create_subscription(LoopClosure, LOOP_TOPIC, self.recorder.on_loop_closure, reliable)
            self.player.create_subscription(DiagnosticArray, "/diagnostics", self.recorder.on_diagnostics, reliable)
            image_cls = CompressedImage if self.compressed else Image
            self.publishers = {self.image_topic: self.player.create_publisher(image_cls, self.image_topic, reliable)}
            if self.odom_topic:
                self.publishers[self.odom_topic] = self.player.create_publisher(Odometry, self.odom_topic, reliable)
            self._clock_pub, self._clock_cls = self.player.create_publisher(Clock, "/clock", reliable), Clock
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.player)
            threading.Thread(target=self.executor.spin, name="replay_executor", daemon=True).start()
            started = time.monotonic()
            self.node = (NodeProcess(self.params_file, self.overrides, self.log_path) if self.separate_process
                         else InProcessNode(self.context, self.params_file, self.overrides))
            self._wait_for_node()
            self.startup_s = time.monotonic() - started
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def image_pub(self):
        return self.publishers[self.image_topic]

    def publish_clock(self, ns: int) -> None:
        self._clock_pub.publish(self._clock_cls(clock=ns_to_stamp(ns)))

    def close(self) -> None:
        import rclpy

        if self.node is not None:
            self.node.stop()
        if self.executor is not None:
            self.executor.shutdown()
        if self.player is not None:
            self.player.destroy_node()
        if self.context is not None:
            rclpy.try_shutdown(context=self.context)
        self.node = self.player = self.executor = self.context = None

    def _wait_for_node(self) -> None:
        """Until the node subscribes to the images and its loop-closure publisher reaches us."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self.node.check_alive()
            if self.image_pub.get_subscription_count() > 0 and self.player.count_publishers(LOOP_TOPIC) > 0:
                time.sleep(0.5)  # discovery is two-way: let the node's side match our publisher as well
                return
            time.sleep(0.05)
        raise RuntimeError(f"the node did not come up within {self.startup_timeout_s:.0f} s "
                           f"(no subscriber on {self.image_pub.topic_name})")


def play(args, bag: Path, index: BagIndex, params_file: Path, overrides: dict, log_path: Path,
         diagnostics_period_s: float) -> dict:
    """Start the node, publish the bag, collect answers. Returns the raw timings and answers (bag order)."""
    recorder = Recorder(by_stamp=index.match_by_stamp)
    keys = index.stamps_ns if index.match_by_stamp else list(range(len(index.stamps_ns)))
    with ReplaySession(params_file, overrides, image_topic=index.image_topic, recorder=recorder,
                       compressed=index.image_type.endswith("CompressedImage"), odom_topic=index.odom_topic,
                       separate_process=args.separate_process, log_path=log_path) as session:
        sent: list[float] = []  # publish time of each image, bag order
        t0 = time.monotonic()
        _publish_bag(args, bag, index, session, keys, sent)
        with recorder.changed:  # the last answers
            recorder.changed.wait_for(lambda: set(keys[: len(sent)]) <= set(recorder.answers),
                                      timeout=args.answer_timeout)
        session.node.check_alive()  # a node that died mid-run must not pass for one that dropped frames
        # playback ends with the last image sent or answered (not with the wait for lost ones)
        last = max([a.received for a in recorder.answers.values()] + sent)
        # the node's diagnostics are periodic: take one issued after the last answer
        with recorder.changed:
            recorder.changed.wait_for(lambda: recorder.diagnostics_at > last, timeout=diagnostics_period_s + 2.0)
            answers = [recorder.answers.get(k) for k in keys]
            diagnostics = recorder.diagnostics
    if not index.match_by_stamp:
        _check_numbering(index, answers, len(sent), diagnostics)
    return {"sent": sent, "answers": answers, "diagnostics": diagnostics, "startup_s": session.startup_s,
            "playback_s": last - t0}


def _check_numbering(index: BagIndex, answers: list[Answer | None], sent: int, diagnostics: dict | None) -> None:
    """Matching by query_id assumes the node numbered the images in the order sent: prove it or refuse."""
    received = None if diagnostics is None else diagnostics.get("frames_received")
    if received is not None and received != sent:
        raise ValueError(f"the node received {received} of the {sent} images sent (lost before its callback), "
                         f"so its answers cannot be matched to images whose stamps are 0 or repeat; "
                         f"replay with --max-in-flight 1 (the default)")
    for k, a in enumerate(answers):
        if a is not None and index.stamped[k] and a.stamp_ns != index.stamps_ns[k]:
            raise ValueError(f"the answer numbered {k} carries stamp {a.stamp_ns} ns but image #{k} has "
                             f"{index.stamps_ns[k]} ns: the node numbered the images differently")


def _publish_bag(args, bag: Path, index: BagIndex, session: ReplaySession, keys: list[int],
                 sent: list[float]) -> None:
    awaiting: list[tuple[int, float]] = []  # (key, sent) of images not yet answered nor given up
    prev_log = prev_wall = None
    with bag_io.open_bag(bag) as reader, progress(total=len(keys), desc="replaying", unit="img") as bar:
        conns = [c for c in reader.connections if c.topic in session.publishers]
        for conn, log_ns, raw in reader.messages(connections=conns):
            if args.rate_scale > 0 and prev_log is not None:
                time.sleep(max(0.0, prev_wall + (log_ns - prev_log) / 1e9 / args.rate_scale - time.monotonic()))
            is_image = conn.topic == index.image_topic
            if is_image and args.max_in_flight > 0:
                _wait_for_answers(session, awaiting, args.max_in_flight, args.answer_timeout)
            session.publish_clock(log_ns)
            session.publishers[conn.topic].publish(bag_io.cdr_bytes(reader, conn, raw))
            prev_log, prev_wall = log_ns, time.monotonic()
            if is_image:
                awaiting.append((keys[len(sent)], prev_wall))
                sent.append(prev_wall)
                bar.update()


def _wait_for_answers(session: ReplaySession, awaiting: list[tuple[int, float]], max_in_flight: int,
                      timeout: float) -> None:
    """Block while ``max_in_flight`` images await answers (each for at most ``timeout`` s)."""
    recorder = session.recorder
    while True:
        now = time.monotonic()
        with recorder.changed:
            awaiting[:] = [(k, t) for k, t in awaiting if k not in recorder.answers and now - t < timeout]
            if len(awaiting) < max_in_flight:
                return
            recorder.changed.wait(timeout=min(0.5, timeout - (now - awaiting[0][1])))
        session.node.check_alive()


# ------------------------------------------------------------------ command


def run(args: argparse.Namespace) -> int:
    bag, params_file = Path(args.bag), Path(args.params)
    if args.max_in_flight < 0 or args.rate_scale < 0 or args.answer_timeout <= 0:
        raise ValueError("--max-in-flight and --rate-scale must be >= 0 and --answer-timeout > 0")
    if args.mode == "localization" and not args.map:
        raise CliError("--map is required in localization mode (mapping mode may start without one)")
    if not params_file.is_file():
        raise FileNotFoundError(f"node parameters file not found: {params_file}")
    node_params = _node_params(params_file)
    fill_sequence_arguments(args, node_params)
    out = Path(args.out)
    _check_output(out)
    db = MapDatabase.load(args.map) if args.map else None
    index = index_bag(bag, args.topic, args.odom_topic, float(node_params["odom_max_offset_s"]))
    if args.mode == "mapping" and not index.match_by_stamp:
        raise ValueError(f"{bag}: mapping-mode replay matches answers to images by stamp, and some images have "
                         f"stamp 0 or share one")
    truths = localization_truth(args, index, db) if args.mode == "localization" else None
    if args.mode == "mapping" and args.gt == "poses":
        bag_positions(index)  # refuse a bag without poses before playing it
    log_path = out.with_name(f"{out.stem}_node.log")
    with tempfile.TemporaryDirectory(prefix="structvpr_replay_") as scratch:
        # mapping mode grows (and saves) its map: never the user's, a copy of it
        map_dir = str(Path(args.map).absolute()) if args.mode == "localization" else ""
        if args.mode == "mapping" and args.map:
            map_dir = str(Path(scratch) / "map")
            shutil.copytree(args.map, map_dir)
        overrides = node_overrides(args, index, db, map_dir)
        run_info = play(args, bag, index, params_file, overrides, log_path,
                        float(node_params["diagnostics_period_s"]))
    answers, sent = run_info["answers"], run_info["sent"]
    if truths is None:
        truths = mapping_truth(args, index, db, answers, float(node_params["exclude_recent_s"]))
    latencies_ms = [None if a is None or k >= len(sent) else (a.received - sent[k]) * 1e3
                    for k, a in enumerate(answers)]
    outcomes = [outcome(a, node_params) for a in answers]
    labels = [f"image {k} (stamp {s})" for k, s in enumerate(index.stamps_ns)]
    report = {
        "bag": str(bag), "mode": args.mode, "image_topic": index.image_topic, "odom_topic": index.odom_topic,
        "bag_duration_s": index.duration_s,
        "map": args.map, "map_keyframes_at_start": 0 if db is None else len(db),
        "map_model": None if db is None else db.model.to_json(),
        "model": args.model, "params_file": str(params_file), "node_overrides": overrides,
        "operating_point": {k: node_params[k] for k in ("score_threshold", "sequence_score_threshold", "verification",
                                                        "consistency_k", "exclude_recent_s", "top_k")},
        "node": "separate process" if args.separate_process else "in-process (own executor thread)",
        "rate_scale": args.rate_scale, "max_in_flight": args.max_in_flight,
        "answers_matched": ("by header stamp" if index.match_by_stamp else
                            "by query_id (the node's image number): image stamps are 0 or repeat"),
        "frames": {
            "in_bag": len(index.stamps_ns),
            "sent": len(sent),
            "answered": sum(a is not None for a in answers),
            "unanswered": sum(a is None for a in answers),
            "with_candidates": sum(a is not None and bool(a.candidates) for a in answers),
            "header_stamp_0": index.stamped.count(False),
        },
        "latency_ms": _stats(np.array([v for v in latencies_ms if v is not None])),
        "node_startup_s": run_info["startup_s"],
        "playback_wall_s": run_info["playback_s"],
        "answered_rate_hz": sum(a is not None for a in answers) / max(run_info["playback_s"], 1e-9),
        "node_diagnostics": run_info["diagnostics"],
        "ground_truth": {name: score_run(pos, outcomes, labels) for name, pos in truths.items()},
        "queries": [
            {"index": k, "stamp_ns": s, "answered": a is not None,
             "latency_ms": None if lat is None else round(lat, 3),
             "map_id": None if a is None or args.mode != "mapping" else a.query_id,
             "published": None if o is None else o.published,
             "candidates": [] if a is None else [[c.map_id, round(c.score, 6)] + ([c.inliers] if c.inliers >= 0 else [])
                                                 for c in a.candidates]}
            for k, (s, a, o, lat) in enumerate(zip(index.stamps_ns, answers, outcomes, latencies_ms))
        ],
    }
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    plot_path = Path(args.plot) if args.plot else out.with_name(f"{out.stem}_pr.png")
    curves = {f"{name} (AP {r['pr_auc']:.3f})": (r["pr_curve"]["precision"], r["pr_curve"]["recall"])
              for name, r in report["ground_truth"].items() if r.get("pr_curve")}
    if curves:
        where = f"vs map {Path(args.map).name}" if args.mode == "localization" else "mapping mode"
        plot_pr(curves, plot_path, title=f"replay {bag.name} {where}")
    print(summary(report, out, plot_path if curves else None))
    return 0


def _check_output(out: Path) -> None:
    """Refuse an unusable report path before playing anything (the work must not be lost at the end)."""
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; give a file name for the JSON report")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--out {out}: cannot create its folder ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise CliError(f"--out {out}: its folder {parent} is not writable")


def _node_params(params_file: Path) -> dict:
    """The node's parameter values from the params file (defaults for what it leaves out)."""
    from structvpr_ros.node_config import parameter_defaults

    values = {k: default for k, (default, _) in parameter_defaults().items()}
    data = load_yaml(params_file)
    for key in ("/**", NODE_NAME, f"/{NODE_NAME}"):  # ROS applies wildcard sections first
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            values.update(section["ros__parameters"])
    return values


def _stats(values_ms: np.ndarray) -> dict | None:
    if not len(values_ms):
        return None
    return {"mean": float(values_ms.mean()), "p50": float(np.percentile(values_ms, 50)),
            "p95": float(np.percentile(values_ms, 95)), "max": float(values_ms.max())}


def summary(report: dict, out: Path, plot: Path | None) -> str:
    f, lat = report["frames"], report["latency_ms"]
    start = report.get("map_keyframes_at_start", 0)
    where = (f"against {report['map']} ({start} keyframes)" if report.get("mode", "localization") == "localization"
             else f"mapping mode, starting from {'an empty map' if not report['map'] else report['map']}")
    lines = [
        f"replay of {report['bag']} ({f['in_bag']} images) {where}, model {report['model']}, node {report['node']}",
        f"  frames sent {f['sent']}, answered {f['answered']}, unanswered (drops) {f['unanswered']}; "
        f"{report['answered_rate_hz']:.1f} answers/s over {report['playback_wall_s']:.1f} s"
        + (f"; round-trip latency mean {lat['mean']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else ""),
    ]
    if not report["ground_truth"]:
        lines.append(f"  not scored (--gt none); candidates published for {f['with_candidates']} of {f['sent']} images")
    received = (report["node_diagnostics"] or {}).get("frames_received")
    if isinstance(received, int) and received > f["sent"]:
        # a foreign publisher's images on the same topic corrupt the numbers
        lines.append(f"  WARNING: the node received {received} images but replay sent {f['sent']}: another "
                     f"publisher shares this ROS domain (set ROS_DOMAIN_ID to a free one); numbers unreliable")
    for name, r in report["ground_truth"].items():
        lines.append("  " + summary_line(name, r))
    lines.append(f"  report: {out}" + (f", PR curve: {plot}" if plot else ""))
    return "\n".join(lines)
