"""StructVPR loop-closure node: images in, loop-closure candidates out.

Run:  python -m structvpr_ros.node --ros-args --params-file config/structvpr.yaml [-p key:=value]
      (or the ``structvpr_node`` console script / launch/structvpr.launch.py on a ROS 2 install)

Parameters: structvpr_ros/node_config.py (all of them, with defaults and checks) and
config/structvpr.yaml (the same, commented). An invalid value, a model that cannot be
loaded or a map built with another model make the node refuse to start with a message
naming the parameter.

Data flow. Image callbacks only stash the newest frame: a frame too soon (stamp) after the
last one taken for processing cannot be a keyframe and is skipped on arrival, and a frame
still waiting when the next one arrives is dropped (counted), so nothing ever queues up
behind a slow encoder or a keyframe's verification. A worker thread takes the newest frame and
  1. keyframe selection (message stamps; with odometry also distance) — frames too close
     to the last keyframe are skipped before they are even decoded;
  2. decodes it (invalid messages, bad stamps, images above ``max_pixels`` and featureless
     frames -- lens cap, darkness, uniform, noise: ``runtime.featureless``, for every model --
     are counted as invalid, logged throttled and skipped: never published, never inserted);
  3. encodes it, queries the map (``structvpr_core.loop_closure.candidates``: top-k, threshold,
     recency exclusion in mapping mode, optional geometric verification, temporal
     consistency; with ``sequence_length`` > 1 the top-k are sequences of the last
     keyframes retracing the map);
  4. mapping mode: adds it to the map as a keyframe (after the query, so it never
     matches itself); localization mode: the map stays as loaded;
  5. publishes ``~/loop_closure`` for every processed query — its candidates are the
     ones that passed every rule once the consistency rule fired, otherwise empty — and,
     for an accepted loop closure, ``~/loop_closure_lio_sam``, ``~/relocalization``
     (localization mode, matched keyframe with a pose) and ``~/markers`` (query and
     match poses known).
``query_id`` is the map id the query gets (mapping) or the image's number among all the
images the node received, from 0 (localization: gaps are frames dropped or skipped; a
player matches answers to images by it when their stamps are 0 or repeat). Every
per-query output has ``header.stamp`` = the image stamp (its arrival time if it has none).

Services: ``~/save_map`` (atomic write to ``map_dir``), ``~/reset_map`` (mapping mode).
Mapping mode with ``map_dir`` also saves on shutdown (SIGINT, SIGTERM, rclpy shutdown) and,
optionally, every ``autosave_keyframes`` / ``autosave_period_s``; a failed save is an ERROR on
``/diagnostics`` until a save succeeds (on shutdown: FATAL and exit code 1).
``/diagnostics`` every ``diagnostics_period_s`` of wall time: rates, latency (message
received -> outputs published), encoder time, dropped / invalid / skipped frames, processing
errors, rejected odometry, map size. Level ERROR for a period with processing errors or in
which frames arrived and none could be used, or with a failed map save; WARN for drops,
invalid frames, bad odometry, keyframes without a pose, an image topic silent for
``input_timeout_s`` (saying why) and an empty localization map. Odometry with NaN values,
a non-unit quaternion, a frame other than ``map_frame`` or a bad stamp is rejected (counted)
on arrival.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, fields

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from structvpr_msgs.msg import LoopClosure
from visualization_msgs.msg import MarkerArray

from structvpr_core.config import ConfigError
from structvpr_core.io_utils import OutputError, check_output_dir, describe_os_error
from structvpr_core.loop_closure.local_features import FeatureExtractor
from structvpr_core.loop_closure.candidates import KeyframeSelector, LoopDetector, PoseBuffer
from structvpr_core.retrieval.map_database import MapDatabase, MapError, ModelIdentity, open_map
from structvpr_core.runtime.featureless import featureless_reason
from structvpr_core.runtime.memory import pin_mmap_threshold
from structvpr_core.runtime.threads import apply_in_this_thread, set_compute_threads
from structvpr_ros import outputs
from structvpr_ros.image_conversion import ImageConversionError, message_to_rgb
from structvpr_ros.node_config import NODE_NAME, config_from_parameters, foreign_parameter_sections, parameter_defaults
from structvpr_ros.stamps import stamp_problem

LOG_THROTTLE_S = 5.0
OUTPUT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)


class StartupError(RuntimeError):
    """The node cannot start: bad parameter, model or map (the message says which)."""


@dataclass
class _Frame:
    msg: Image | CompressedImage
    received: float  # time.monotonic() in the callback, for the latency figure
    received_ros_ns: int  # node clock (sim time with use_sim_time) in the callback, for unstamped images
    number: int  # images received before this one: its query_id in localization mode
    stamp_ns: int  # header stamp, or received_ros_ns when it has none: what keyframe admission used


@dataclass
class _Stats:
    """Counters since start (totals) and sums since the last diagnostics message (period_*).

    Updated from the image callback, the worker and the diagnostics timer: always via
    ``add`` / ``take_period`` (one lock).
    """

    received: int = 0
    processed: int = 0
    dropped: int = 0
    invalid: int = 0
    skipped: int = 0
    errors: int = 0
    odometry_rejected: int = 0
    keyframes_without_pose: int = 0  # odometry on, but none within odom_max_offset_s of the image
    loop_closures: int = 0
    period_received: int = 0
    period_processed: int = 0
    period_dropped: int = 0
    period_invalid: int = 0
    period_errors: int = 0
    period_odometry_rejected: int = 0
    period_keyframes_without_pose: int = 0
    period_latency_ms_sum: float = 0.0
    period_latency_ms_max: float = 0.0
    period_encoder_ms_sum: float = 0.0
    period_verification_ms_sum: float = 0.0  # ORB extraction + verify; 0 with verification off

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **increments) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)
                if hasattr(self, f"period_{name}"):
                    setattr(self, f"period_{name}", getattr(self, f"period_{name}") + value)

    def add_timing(self, latency_ms: float, encoder_ms: float, verification_ms: float) -> None:
        with self._lock:
            self.period_latency_ms_sum += latency_ms
            self.period_latency_ms_max = max(self.period_latency_ms_max, latency_ms)
            self.period_encoder_ms_sum += encoder_ms
            self.period_verification_ms_sum += verification_ms

    def take_period(self) -> dict[str, float]:
        """All counters, then the period sums start again from zero."""
        with self._lock:
            snapshot = {f.name: getattr(self, f.name) for f in fields(self)}
            for f in fields(self):
                if f.name.startswith("period_"):
                    setattr(self, f.name, f.default)
        return snapshot


class StructVPRNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.config = cfg = self._declare_and_read_parameters()
            self._load_model_and_map()
            self.detector = LoopDetector(self.db, cfg.loop_closure_config(), cfg.intrinsics())
            # the verification_features extractor (XFeat loads its network once, here)
            self._extract_features = (FeatureExtractor.from_config(cfg.loop_closure_config().geometry)
                                      if cfg.verification != "off" else None)
            self.keyframes = KeyframeSelector(cfg.keyframe_min_interval_s, cfg.keyframe_min_distance_m)
            self.poses = PoseBuffer(cfg.odom_max_offset_s)
        except (ConfigError, OSError, ValueError, RuntimeError) as e:
            self.get_logger().fatal(f"refusing to start: {e}")
            self.destroy_node()
            raise StartupError(str(e)) from None
        # Without verification only the network sees the pixels: decode no more than its input
        # (JPEG DCT scaling, resize before colour conversion). ORB features need full resolution.
        rule = getattr(self.encoder, "input_rule", None)  # raw-pixel: its own grid, full decode
        self._decode_size = rule.shrink_size if rule is not None and cfg.verification == "off" else None
        self.stats = _Stats()
        self._map_lock = threading.RLock()  # worker (query + add) vs save/reset services
        self._frame_ready = threading.Condition()
        self._pending: _Frame | None = None
        # stamp of the last frame taken for processing: frames sooner than keyframe_min_interval_s
        # after it are skipped on arrival, so they never wait behind a keyframe being verified
        self._admitted_ns: int | None = None
        self._stopping = False
        self._last_image_at = time.monotonic()  # for the input_timeout_s warning
        # map saving (D1): keyframes added since the last successful save, the last failure
        self._unsaved = 0
        self._last_save_attempt = time.monotonic()
        self._next_autosave_at = cfg.autosave_keyframes
        self._save_error: str | None = None
        self.shutdown_save_failed = False
        self._setup_ros_interfaces()
        self._worker = threading.Thread(target=self._work, name="structvpr_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: mode {cfg.mode}, model {self.db.model.describe()} on {self.device}{self._inference_note()}, "
            f"map {len(self.db)} keyframes{f' from {cfg.map_dir}' if len(self.db) else ''}, "
            f"images on '{cfg.image_topic or '-'}' / compressed '{cfg.compressed_topic or '-'}'")

    # --- startup ------------------------------------------------------------------------
    def _declare_and_read_parameters(self):
        values = {}
        for name, (default, help_text) in parameter_defaults().items():
            # dynamic typing: the value's type is checked by NodeConfig, with a message naming it
            descriptor = ParameterDescriptor(description=help_text, dynamic_typing=True)
            values[name] = self.declare_parameter(name, default, descriptor).value
        # rclpy silently ignores overrides nobody declares; a typo deserves a warning
        # (rclpy has no public accessor for the overrides, hence the private attribute)
        unknown = sorted(name for name in self._parameter_overrides if not self.has_parameter(name))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameter(s) {unknown} (misspelt? see config/structvpr.yaml)")
        cfg = config_from_parameters(values)
        self._check_topic_names(cfg)
        return cfg

    def _check_topic_names(self, cfg) -> None:
        from rclpy.exceptions import InvalidTopicNameException
        from rclpy.expand_topic_name import expand_topic_name
        from rclpy.validate_full_topic_name import validate_full_topic_name

        for name in ("image_topic", "compressed_topic", "odom_topic"):
            topic = getattr(cfg, name)
            if not topic:
                continue
            try:
                validate_full_topic_name(expand_topic_name(topic, self.get_name(), self.get_namespace()))
            except (InvalidTopicNameException, ValueError, RuntimeError) as e:
                reason = str(e).splitlines()[0].split(":", 1)[-1].strip()
                raise ConfigError(f"invalid parameter: {name}: {topic!r} is not a valid ROS topic name ({reason})") from None

    def _load_model_and_map(self) -> None:
        # imported here, not at the top: torch takes seconds to import, and a node with a
        # bad parameter should say so at once
        from structvpr_core.runtime.encoder import load_encoder

        cfg = self.config
        if cfg.mode == "mapping" and cfg.map_dir:  # before the model loads: a map that cannot be saved is lost
            try:
                check_output_dir(cfg.map_dir, "map_dir")
            except OutputError as e:
                raise ConfigError(f"{e} (mapping mode saves the map there)") from None
        pin_mmap_threshold()  # memory proportional to the map over long runs (runtime/memory.py)
        if cfg.cpu_threads:
            set_compute_threads(cfg.cpu_threads)
        if cfg.model == "raw-pixel":  # no network: no device, and no torch import (seconds on a busy CPU)
            self.device = "cpu"
        else:
            from structvpr_core.runtime.network import pick_device

            try:
                self.device = pick_device(cfg.device)
            except RuntimeError as e:  # CUDA requested but missing
                raise ConfigError(f"device: {e}") from None
        try:
            self.encoder = load_encoder(cfg.model, str(self.device), cfg.input_size,
                                        runtime=cfg.runtime, precision=cfg.precision)
        except ConfigError:  # a runtime / precision this machine cannot run; the message names it
            raise
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"model: {e}") from None
        identity = ModelIdentity.of_encoder(self.encoder)
        if not cfg.map_dir:
            self.db = MapDatabase(identity)
            return
        try:
            self.db = open_map(cfg.map_dir, identity, create=cfg.mode == "mapping")
        except MapError as e:
            raise ConfigError(f"map_dir: {e}") from None
        kind = self.db.feature_kind
        if cfg.verification != "off" and kind not in (None, cfg.verification_features):
            raise ConfigError(f"verification_features: the map {cfg.map_dir} holds {kind} features, "
                              f"verification_features is '{cfg.verification_features}' (set it to '{kind}', or "
                              f"rebuild the map: build-map --with-features --features {cfg.verification_features})")
        if cfg.mode == "localization" and not len(self.db):
            self.get_logger().warning(f"map_dir {cfg.map_dir} holds 0 keyframes: localization can never match "
                                      f"(build the map first)")
        self._warn_if_unverifiable()
        if cfg.sequence_length > 1 and self.db.index.kind != "flat":
            raise ConfigError(f"sequence_length: sequence matching scores every keyframe and needs a map with "
                              f"the flat index, {cfg.map_dir} has '{self.db.index.kind}'")

    def _inference_note(self) -> str:
        path = getattr(self.encoder, "path", None)  # raw-pixel has no network
        return f" ({path.describe()})" if path else ""

    def _warn_if_unverifiable(self) -> None:
        if self.config.verification == "off":
            return
        missing = sum(self.db.keyframe(i).features is None for i in range(len(self.db)))
        if missing:
            self.get_logger().warning(
                f"verification '{self.config.verification}': {missing} of {len(self.db)} map keyframes have no "
                f"local features and cannot be verified (build the map with --with-features)")

    def _setup_ros_interfaces(self) -> None:
        cfg = self.config
        reliability = (QoSReliabilityPolicy.RELIABLE if cfg.qos_reliability == "reliable"
                       else QoSReliabilityPolicy.BEST_EFFORT)
        image_qos = QoSProfile(depth=cfg.qos_depth, history=QoSHistoryPolicy.KEEP_LAST, reliability=reliability)
        if cfg.image_topic:
            self.create_subscription(Image, cfg.image_topic, self._on_image, image_qos)
        if cfg.compressed_topic:
            self.create_subscription(CompressedImage, cfg.compressed_topic, self._on_image, image_qos)
        if cfg.odom_topic:
            self.create_subscription(Odometry, cfg.odom_topic, self._on_odometry, QoSProfile(depth=50))
        self.pub_loop = self.create_publisher(LoopClosure, "~/loop_closure", OUTPUT_QOS)
        self.pub_lio_sam = self.create_publisher(Float64MultiArray, "~/loop_closure_lio_sam", OUTPUT_QOS)
        self.pub_reloc = self.create_publisher(PoseWithCovarianceStamped, "~/relocalization", OUTPUT_QOS)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.create_service(Trigger, "~/save_map", self._on_save_map)
        self.create_service(Trigger, "~/reset_map", self._on_reset_map)
        # wall clock on purpose: diagnostics report compute rates, and a paused bag must not stop them
        self._last_diag = time.monotonic()
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- callbacks (short: stash and return) -----------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        arrival_ros_ns = self.get_clock().now().nanoseconds
        with self._frame_ready:
            number = self.stats.received  # only this callback counts images, under this lock
            self._last_image_at = time.monotonic()
            stamp_ns = outputs.stamp_to_ns(msg.header.stamp) or arrival_ros_ns
            if not self._admit(stamp_ns):
                self.stats.add(received=1, skipped=1)
                return
            stale = self._pending is not None  # the worker is busy: the older frame is stale
            self.stats.add(received=1, dropped=int(stale))
            self._pending = _Frame(msg, time.monotonic(), arrival_ros_ns, number, stamp_ns)
            self._frame_ready.notify()

    def _admit(self, stamp_ns: int) -> bool:
        """The time rule of keyframe selection, on arrival (the worker applies every rule again).

        A keyframe's encoding and verification take longer than a camera's frame period; frames
        that cannot be keyframes anyway are counted as skipped here instead of queueing behind it
        and being dropped. A stamp earlier than the last one (a bag restarted) is always taken."""
        last = self._admitted_ns
        if last is not None and 0 <= stamp_ns - last < self.keyframes.min_interval_ns:
            return False
        self._admitted_ns = stamp_ns
        return True

    def _on_odometry(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            if msg.header.frame_id != self.config.map_frame:  # poses are stored and published in map_frame
                raise ValueError(f"it is in frame '{msg.header.frame_id}', map_frame is '{self.config.map_frame}' "
                                 f"(set map_frame to the odometry's frame)")
            problem = self._stamp_problem(msg.header.stamp)
            if problem:
                raise ValueError(problem)
            self.poses.add(outputs.stamp_to_ns(msg.header.stamp), [p.x, p.y, p.z, q.x, q.y, q.z, q.w])
        except ValueError as e:  # stored, it would become NaN markers and [0,0,0,0] relocalizations
            self.stats.add(odometry_rejected=1)
            self.get_logger().warning(f"rejecting odometry: {e}", throttle_duration_sec=LOG_THROTTLE_S)

    def _on_save_map(self, request, response):
        if not self.config.map_dir:
            response.success, response.message = False, "map_dir is empty: nowhere to save the map"
            return response
        response.success, response.message = self._save_map("on request")
        return response

    def _save_map(self, why: str) -> tuple[bool, str]:
        """Save to map_dir; a failure is logged as an ERROR and stays on /diagnostics until a save succeeds."""
        try:
            with self._map_lock:
                path, n = self.db.save(self.config.map_dir), len(self.db)
                self._unsaved = 0
        except (OSError, MapError) as e:
            reason = describe_os_error(e) if isinstance(e, OSError) else str(e)
            self._save_error = f"saving the map ({why}) to {self.config.map_dir} failed: {reason}"
            self.get_logger().error(f"{self._save_error}; {self._unsaved} keyframes are not on disk")
            return False, self._save_error
        self._save_error = None
        message = f"saved {n} keyframes to {path} ({why})"
        self.get_logger().info(message)
        return True, message

    def _autosave_due(self) -> bool:
        cfg = self.config
        if not (cfg.mode == "mapping" and cfg.map_dir and self._unsaved):
            return False
        if cfg.autosave_keyframes and self._unsaved >= self._next_autosave_at:
            return True
        return bool(cfg.autosave_period_s) and time.monotonic() - self._last_save_attempt >= cfg.autosave_period_s

    def _autosave(self) -> None:
        # retries wait for the next N keyframes / period: a full disk must not cost a save per frame
        self._last_save_attempt = time.monotonic()
        unsaved = self._unsaved
        ok, _ = self._save_map("autosave")
        self._next_autosave_at = self.config.autosave_keyframes if ok else unsaved + self.config.autosave_keyframes

    def _on_reset_map(self, request, response):
        if self.config.mode != "mapping":
            response.success, response.message = False, "reset_map is refused in localization mode (fixed map)"
            return response
        with self._map_lock:
            self.db.reset()
            self.detector.reset()
            self.keyframes.reset()
            with self._frame_ready:
                self._admitted_ns = None
            self._unsaved = 1  # the emptied map differs from the saved one: shutdown saves it
        response.success, response.message = True, "map reset to 0 keyframes"
        self.get_logger().info(response.message)
        return response

    # --- worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        # OpenMP thread counts are per thread: without this, faiss would run every
        # single-image query on all cores; waiting for that OpenMP team on a busy machine
        # cost ~5-13 ms per query against ~0.1 ms single-threaded (20-keyframe map, 2 cores)
        apply_in_this_thread()
        while True:
            with self._frame_ready:
                while self._pending is None and not self._stopping:
                    self._frame_ready.wait()
                if self._stopping:
                    return
                frame, self._pending = self._pending, None
            try:
                self._process(frame)
            except Exception:  # keep the node alive; a bug here must be visible, not fatal
                self.stats.add(errors=1)
                self.get_logger().error(f"processing a frame failed:\n{traceback.format_exc()}",
                                        throttle_duration_sec=LOG_THROTTLE_S)
            finally:
                self._release_unless_keyframe(frame)

    def _release_unless_keyframe(self, frame: _Frame) -> None:
        """A frame admitted on arrival that did not become a keyframe (distance rule, invalid, error)
        gives its slot back: the next frame is measured from the last real keyframe again."""
        with self._frame_ready:
            if self._admitted_ns == frame.stamp_ns and self.keyframes.last_stamp_ns != frame.stamp_ns:
                self._admitted_ns = self.keyframes.last_stamp_ns

    def _process(self, frame: _Frame) -> None:
        cfg, header = self.config, frame.msg.header
        problem = self._stamp_problem(header.stamp)
        if problem:
            self._skip_invalid(problem)
            return
        stamp_ns = outputs.stamp_to_ns(header.stamp)
        if stamp_ns == 0:  # some drivers leave stamps empty; the timing rules need one
            self.get_logger().warning("image without stamp: using its arrival time (fix the camera driver)",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            stamp_ns = frame.received_ros_ns
            header = Header(stamp=outputs.ns_to_stamp(stamp_ns), frame_id=header.frame_id)
        pose = self.poses.pose_at(stamp_ns) if cfg.odom_topic else None
        position = None if pose is None else pose[:3]
        mapping = cfg.mode == "mapping"
        with self._map_lock:
            if not self._is_keyframe(stamp_ns, position):
                self.stats.add(skipped=1)
                return
            try:
                rgb = message_to_rgb(frame.msg, cfg.max_pixels, self._decode_size)
            except ImageConversionError as e:
                self._skip_invalid(str(e))
                return
            featureless = featureless_reason(rgb)  # every model describes a black frame, all alike
            if featureless:
                self._skip_invalid(featureless)
                return
            started = time.perf_counter()
            descriptor = self.encoder.encode([rgb])[0]
            encoder_ms = (time.perf_counter() - started) * 1e3
            if not descriptor.any():  # raw-pixel on a uniform image: nothing to compare, faiss refuses it
                self._skip_invalid(f"the {rgb.shape[1]}x{rgb.shape[0]} image is uniform (lens cap, darkness?): "
                                   f"model {self.encoder.name} gives it no descriptor")
                return
            started = time.perf_counter()
            features = self._extract_features(rgb) if self._extract_features is not None else None
            extraction_ms = (time.perf_counter() - started) * 1e3
            query_id = len(self.db) if mapping else frame.number
            detection = self.detector.detect(descriptor, stamp_ns, exclude_recent=mapping, features=features)
            if mapping:
                self.db.add(descriptor, stamp_ns, header.frame_id, pose=pose, features=features)
                self._unsaved += 1
            self.keyframes.commit(stamp_ns, position)
            accepted = detection.candidates if detection.loop_closed else []
            matches = [(c, self.db.keyframe(c.map_id)) for c in accepted]
        if cfg.odom_topic and pose is None:
            self.stats.add(keyframes_without_pose=1)
            self.get_logger().warning(f"keyframe {query_id} has no pose: no odometry within odom_max_offset_s "
                                      f"{cfg.odom_max_offset_s:g} s of its stamp (stale or missing odometry)",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        self._publish(header, stamp_ns, query_id, pose, matches, detection)
        self.stats.add(processed=1, loop_closures=int(bool(matches)))
        if self._autosave_due():
            self._autosave()
        self.stats.add_timing((time.monotonic() - frame.received) * 1e3, encoder_ms,
                              extraction_ms + detection.verification_ms)

    def _stamp_problem(self, stamp) -> str | None:
        return stamp_problem(stamp, time.time_ns(), round(self.config.stamp_max_ahead_s * 1e9))

    def _skip_invalid(self, reason: str) -> None:
        self.stats.add(invalid=1)
        self.get_logger().warning(f"skipping invalid image: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    def _is_keyframe(self, stamp_ns: int, position) -> bool:
        if self.keyframes.last_stamp_ns is not None and stamp_ns < self.keyframes.last_stamp_ns:
            self.get_logger().warning("image stamps jumped back in time (bag restarted?): "
                                      "restarting keyframe selection and consistency")
            self.keyframes.reset()
            self.detector.reset()
        return self.keyframes.accepts(stamp_ns, position)

    def _publish(self, header: Header, stamp_ns: int, query_id: int, query_pose, matches, detection) -> None:
        cfg = self.config
        self.pub_loop.publish(outputs.loop_closure_msg(header, query_id, matches, detection.sequence_length,
                                                       detection.sequence_start_stamp_ns))
        if not matches:
            return
        best, keyframe = matches[0]
        self.pub_lio_sam.publish(outputs.lio_sam_msg(stamp_ns, keyframe.stamp_ns))
        if cfg.mode == "localization" and keyframe.pose is not None:
            pose, covariance = outputs.relocalization_pose(
                keyframe.pose, cfg.base_to_camera, best.verification,
                cfg.relocalization_position_std_m, cfg.relocalization_orientation_std_rad)
            self.pub_reloc.publish(outputs.relocalization_msg(header.stamp, cfg.map_frame, pose, covariance))
        if query_pose is not None and keyframe.pose is not None:
            verified = best.verification is not None and best.verification.verified
            self.pub_markers.publish(
                outputs.loop_markers(header.stamp, cfg.map_frame, query_id, query_pose, keyframe.pose, verified))

    # --- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        elapsed, self._last_diag = max(now - self._last_diag, 1e-9), now
        s = self.stats.take_period()
        done = max(s["period_processed"], 1)
        values = {
            "input_rate_hz": s["period_received"] / elapsed,
            "processed_rate_hz": s["period_processed"] / elapsed,
            "latency_ms_mean": s["period_latency_ms_sum"] / done,
            "latency_ms_max": s["period_latency_ms_max"],
            "encoder_ms_mean": s["period_encoder_ms_sum"] / done,
            "verification_ms_mean": s["period_verification_ms_sum"] / done,
            "frames_received": s["received"],
            "frames_processed": s["processed"],
            "frames_dropped": s["dropped"],
            "frames_invalid": s["invalid"],
            "frames_skipped_not_keyframe": s["skipped"],
            "processing_errors": s["errors"],
            "odometry_rejected": s["odometry_rejected"],
            "keyframes_without_pose": s["keyframes_without_pose"],
            "loop_closures": s["loop_closures"],
            "map_size": len(self.db),
            "unsaved_keyframes": self._unsaved if self.config.mode == "mapping" and self.config.map_dir else 0,
            "mode": self.config.mode,
        }
        errors, warnings = [], []
        if s["period_errors"]:  # a bug or a broken model, never normal input
            errors.append(f"{s['period_errors']} frames failed with processing errors (see the log)")
        if s["period_invalid"]:
            (warnings if s["period_processed"] else errors).append(
                f"{s['period_invalid']} invalid image messages{'' if s['period_processed'] else ', none usable'}")
        if s["period_dropped"]:
            warnings.append(f"{s['period_dropped']} frames dropped (processing slower than input)")
        if s["period_odometry_rejected"]:
            warnings.append(f"{s['period_odometry_rejected']} odometry messages rejected (NaN, non-unit quaternion, "
                            f"wrong frame or bad stamp: see the log)")
        if s["period_keyframes_without_pose"]:
            warnings.append(f"{s['period_keyframes_without_pose']} keyframes without pose (no odometry within "
                            f"odom_max_offset_s)")
        if self._save_error:
            errors.append(self._save_error)
        silent_s = now - self._last_image_at
        if self.config.input_timeout_s and silent_s >= self.config.input_timeout_s:
            warnings.append(f"no image for {silent_s:.0f} s: {self._input_silence_cause()}")
        if self.config.mode == "localization" and not len(self.db):
            warnings.append("the localization map holds 0 keyframes: nothing can match")
        self.pub_diag.publish(outputs.diagnostics_msg(self.get_clock().now().to_msg(), NODE_NAME, values,
                                                      errors, warnings))

    def _input_silence_cause(self) -> str:
        """Which of no publisher / a publisher of the wrong type / publishers that deliver nothing."""
        causes = []
        for topic, expected in ((self.config.image_topic, "sensor_msgs/msg/Image"),
                                (self.config.compressed_topic, "sensor_msgs/msg/CompressedImage")):
            if not topic:
                continue
            name = self.resolve_topic_name(topic)
            types = sorted({info.topic_type for info in self.get_publishers_info_by_topic(name)})
            if not types:
                causes.append(f"no publisher on {name}")
            elif expected not in types:
                causes.append(f"the publisher on {name} has type {', '.join(types)}, expected {expected}")
            else:
                causes.append(f"{name} has a publisher but nothing arrives (stopped, or QoS incompatible with "
                              f"qos_reliability '{self.config.qos_reliability}')")
        return "; ".join(causes)

    # --- shutdown -----------------------------------------------------------------------------
    def destroy_node(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with self._frame_ready:
                self._stopping = True
                self._frame_ready.notify()
            worker.join()
            self._save_on_shutdown()
        super().destroy_node()

    def _save_on_shutdown(self) -> None:
        """Mapping mode: keyframes not yet on disk are saved (SIGINT, SIGTERM, rclpy shutdown, destroy)."""
        cfg = self.config
        if cfg.mode != "mapping" or not cfg.map_dir or not self._unsaved:
            return
        unsaved = self._unsaved
        ok, message = self._save_map("on shutdown")
        if not ok:
            self.shutdown_save_failed = True
            self.get_logger().fatal(f"{unsaved} keyframes since the last save are LOST: {message}")


def main(args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args)
    except rclpy_implementation.RCLError as e:  # e.g. a params file that is not valid ROS parameter YAML
        print(f"[FATAL] [{NODE_NAME}]: refusing to start: bad ROS arguments: {e}", file=sys.stderr)
        return 2
    try:
        node = StructVPRNode()
    except StartupError:  # already logged as FATAL with the reason
        rclpy.try_shutdown()
        return 2
    for path, section in foreign_parameter_sections(sys.argv if args is None else args):
        node.get_logger().warning(f"params file {path}: section '{section}' is for another node and is ignored "
                                  f"(this node is '{NODE_NAME}'; use '{NODE_NAME}:' or '/**:')")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _keep_saving_through_signals(node)
        node.destroy_node()  # saves the map in mapping mode
        rclpy.try_shutdown()
    return 1 if node.shutdown_save_failed else 0


def _keep_saving_through_signals(node: StructVPRNode) -> None:
    """A second Ctrl-C, or launch escalating SIGINT to SIGTERM, must not interrupt the shutdown save
    half way (measured: it raised KeyboardInterrupt inside the index write and the map was lost).
    The save is atomic, so SIGKILL stays safe: the previous map on disk is kept."""
    def wait(signum, frame):
        node.get_logger().warning(f"{signal.Signals(signum).name} while saving the map: still saving "
                                  f"(SIGKILL abandons this save and keeps the previous map on disk)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, wait)


if __name__ == "__main__":
    sys.exit(main())
