"""Every parameter of the loop-closure node, in one dataclass: name, default, help, validation.

The node declares one ROS parameter per field (same name, the field's default, the
``help`` text as its description), reads them back and builds ``NodeConfig`` with
``config.from_dict``. Any invalid value raises ``ConfigError`` naming the parameter,
and the node refuses to start. ``config/structvpr.yaml`` lists the same parameters
(a test checks both directions).

No rclpy import here: the config can be built and validated without ROS.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal

from structvpr_core.models.shipped import DEFAULT_MODEL
from structvpr_core.config import ConfigError, from_dict
from structvpr_core.loop_closure.geometry import CameraIntrinsics, GeometryConfig
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.retrieval.sequence import MAX_LENGTH, MAX_VELOCITY_STEPS, SequenceConfig, normalization_for
from structvpr_core.runtime.options import PRECISIONS, RUNTIMES
from structvpr_core.runtime.threads import max_threads
from structvpr_core.runtime.input_rule import MAX_INPUT_PIXELS, NETWORK_STRIDE

NODE_NAME = "structvpr_node"
# Longest duration a *_s parameter may have (~31 years): stamps minus it still fit int64 ns.
MAX_DURATION_S = 1e9
# Shortest /diagnostics period: faster only loads the executor the images arrive on.
MIN_DIAGNOSTICS_PERIOD_S = 0.05
# Largest max_pixels: 10x the default; one such RGB frame is 1.2 GB in memory.
MAX_PIXELS = 400_000_000
# ROS base_link (x forward, y left, z up) -> camera optical frame (z forward, x right, y down)
OPTICAL_FRAME_IN_BASE = (0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5)


def _p(default, help: str):
    """A parameter: dataclass field with its default and the description ROS tools show."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class NodeConfig:
    # --- model ---------------------------------------------------------------------
    model: str = _p(DEFAULT_MODEL, "descriptor model: checkpoint file (a bare name = a shipped one), or a baseline "
                                   "raw-pixel | random-mobilenetv2 | imagenet-mobilenetv2 | imagenet-lite0 | imagenet-lite0-mc")
    input_width: int = _p(0, "image width fed to the network (>= 32), 0 = the model's own input rule")
    input_height: int = _p(0, "image height fed to the network (>= 32), 0 = the model's own input rule")
    device: Literal["auto", "cpu", "cuda"] = _p("auto", "torch device: auto (cuda when available) | cpu | cuda")
    runtime: Literal[RUNTIMES] = _p(
        "auto", "network runtime: auto (CPU: ONNX Runtime fp32, OpenVINO for precision bf16; CUDA: torch) | "
                "torch | onnxruntime | openvino")
    precision: Literal[PRECISIONS] = _p(
        "auto", "network precision: auto | fp32 | bf16 (CPU with AVX512-BF16/AMX, or CUDA) | fp16 (CUDA)")
    cpu_threads: int = _p(1, "threads for the encoder, map queries and OpenCV; 0 = the libraries' defaults")
    # --- mode and map --------------------------------------------------------------
    mode: Literal["mapping", "localization"] = _p(
        "mapping", "mapping: query then add keyframes | localization: query a fixed map, never add")
    map_dir: str = _p("", "map directory: loaded at start if it exists, written by ~/save_map; empty = in-memory map")
    autosave_keyframes: int = _p(0, "mapping mode: also save the map every this many new keyframes; 0 = off")
    autosave_period_s: float = _p(
        0.0, "mapping mode: also save the map when this long (wall time) has passed since the last save; 0 = off")
    # --- inputs --------------------------------------------------------------------
    image_topic: str = _p("image", "sensor_msgs/Image topic, empty = off")
    compressed_topic: str = _p("", "sensor_msgs/CompressedImage topic, empty = off")
    odom_topic: str = _p("", "nav_msgs/Odometry topic for keyframe poses and distance-based keyframes, empty = off")
    qos_reliability: Literal["reliable", "best_effort"] = _p(
        "reliable", "image subscription reliability (best_effort loses most large images)")
    qos_depth: int = _p(2, "image subscription queue depth; the node only ever processes the newest frame")
    max_pixels: int = _p(
        40_000_000, "larger images (width x height, read from the JPEG/PNG header before decoding) are rejected")
    input_timeout_s: float = _p(
        5.0, "/diagnostics WARN when no image arrived for this long (wall time), naming the cause; 0 = off")
    stamp_max_ahead_s: float = _p(
        3600.0, "images and odometry stamped further ahead of this machine's wall clock are rejected")
    # --- keyframe selection (message stamps, so it works with use_sim_time) -----------
    keyframe_min_interval_s: float = _p(0.5, "process a frame only if this long (stamp time) after the last keyframe")
    keyframe_min_distance_m: float = _p(0.0, "with odometry: also require moving this far since the last keyframe")
    odom_max_offset_s: float = _p(0.1, "an image takes the odometry pose nearest its stamp if within this offset")
    # --- loop closure (structvpr_core.loop_closure.candidates) ---------------------------------
    top_k: int = _p(5, "candidates retrieved per query")
    score_threshold: float = _p(0.5, "minimum cosine similarity of a candidate, in [-1, 1]")
    exclude_recent_s: float = _p(30.0, "mapping mode: ignore keyframes newer than query stamp minus this")
    consistency_k: int = _p(1, "consecutive agreeing queries needed before a loop closure is published")
    consistency_window: int = _p(3, "best candidates of consecutive queries agree if their map ids differ by <= this")
    # --- sequence matching (structvpr_core.retrieval.sequence) ---------------------------
    sequence_length: int = _p(3, "match the last L keyframes as a sequence; 1 = single-frame matching")
    sequence_min_velocity: float = _p(0.8, "slowest sequence, map keyframes per query keyframe (0 = standing still)")
    sequence_max_velocity: float = _p(1.25, "fastest sequence, map keyframes per query keyframe")
    sequence_velocity_steps: int = _p(5, "velocities tried, evenly spaced from min to max")
    sequence_reverse: bool = _p(False, "also match the map driven in the opposite direction")
    sequence_normalization: Literal["auto", "none", "local_contrast"] = _p(
        "auto", "similarity-row normalisation: auto = local_contrast for raw-pixel, none for learned models")
    sequence_score_threshold: float = _p(
        0.0, "minimum sequence score: standard deviations above the query's typical sequence")
    sequence_candidates: Literal["sequence", "both"] = _p(
        "sequence", "sequence: sequence matches only | both: then single-frame matches not already listed")
    # --- geometric verification (structvpr_core.loop_closure.geometry) ---------------------------
    verification: Literal["off", "annotate", "require"] = _p(
        "require", "local features + essential matrix check: off | annotate (report inliers, pose) | require (drop unverified)")
    max_features: int = _p(1024, "local-feature keypoints per image (strongest first)")
    ratio_test: float = _p(0.8, "Lowe ratio test for ORB matches")
    ransac_threshold_px: float = _p(1.5, "RANSAC epipolar distance threshold, pixels")
    essential_estimator: Literal["usac", "ransac", "magsac"] = _p(
        "usac", "essential-matrix estimator: usac (LO-RANSAC, ~2.4x faster) | ransac (plain) | magsac (MAGSAC++)")
    min_inliers: int = _p(40, "inliers needed for a candidate to count as verified")
    min_keypoints: int = _p(100, "images with fewer keypoints are never verified (tiny or bare frames)")
    min_image_pixels: int = _p(5_000, "images with fewer pixels (width x height) are never verified (too little detail)")
    verification_threads: int = _p(2, "candidates verified at once (threads)")
    camera_fx: float = _p(0.0, "intrinsics in pixels; 0 = guess (focal 1.2 x larger image side, centred)")
    camera_fy: float = _p(0.0, "see camera_fx")
    camera_cx: float = _p(0.0, "see camera_fx")
    camera_cy: float = _p(0.0, "see camera_fx")
    verification_features: Literal["orb", "xfeat"] = _p(
        "xfeat", "local features for verification: orb | xfeat (learned, survives day/night); the map's must match")
    xfeat_min_cosine: float = _p(0.82, "xfeat: mutual nearest-neighbour matches need at least this cosine")
    xfeat_max_image_width: int = _p(640, "xfeat: images are shrunk to at most this width for the network")
    xfeat_min_image_width: int = _p(
        640, "xfeat: narrower images are enlarged to this width for the network, the RANSAC threshold with them (0 = never)")
    xfeat_runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = _p(
        "auto", "xfeat network runtime: auto = OpenVINO fp32 (same keypoints as torch, faster)")
    # --- outputs -------------------------------------------------------------------
    map_frame: str = _p("map", "frame of odometry/keyframe poses: relocalization and marker frame_id")
    base_to_camera: list[float] = _p(
        OPTICAL_FRAME_IN_BASE, "camera optical frame in the odometry child frame: x y z qx qy qz qw")
    relocalization_position_std_m: float = _p(
        10.0, "relocalization position std: a place match says 'near this keyframe', not where exactly")
    relocalization_orientation_std_rad: float = _p(
        0.35, "relocalization orientation std without geometric verification")
    diagnostics_period_s: float = _p(1.0, "period of /diagnostics (wall clock)")

    def __post_init__(self):
        for f in fields(self):  # NaN passes every < / > check below, inf breaks stamp arithmetic
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
            if f.name.endswith("_s") and value > MAX_DURATION_S:
                raise ConfigError(f"{f.name} must be <= {MAX_DURATION_S:g} s, got {value}")
        if not self.model:
            raise ConfigError("model must name a checkpoint file or a baseline (raw-pixel, random-mobilenetv2)")
        if self.input_width < 0 or self.input_height < 0 or (self.input_width == 0) != (self.input_height == 0):
            raise ConfigError(
                f"input_width and input_height must both be 0 (model default) or both > 0, "
                f"got {self.input_width}x{self.input_height}")
        if self.input_width and not (NETWORK_STRIDE <= min(self.input_width, self.input_height)
                                     and self.input_width * self.input_height <= MAX_INPUT_PIXELS):
            raise ConfigError(
                f"input_width and input_height must each be >= {NETWORK_STRIDE} (the network downsamples by "
                f"{NETWORK_STRIDE}) with input_width x input_height <= {MAX_INPUT_PIXELS}, "
                f"got {self.input_width}x{self.input_height}")
        if self.mode == "localization" and not self.map_dir:
            raise ConfigError("mode 'localization' needs map_dir: the fixed map to localise against")
        if not self.image_topic and not self.compressed_topic:
            raise ConfigError("image_topic and compressed_topic are both empty: the node would get no images")
        if not 0 <= self.cpu_threads <= max_threads():
            raise ConfigError(f"cpu_threads must be in 0..{max_threads()} (4x this machine's cores), "
                              f"got {self.cpu_threads}")
        if self.map_dir != self.map_dir.strip():
            raise ConfigError(f"map_dir {self.map_dir!r} starts or ends with spaces: give a directory, or '' for "
                              f"an in-memory map")
        for name, limit in (("sequence_length", MAX_LENGTH), ("sequence_velocity_steps", MAX_VELOCITY_STEPS),
                            ("max_pixels", MAX_PIXELS)):
            if not 1 <= getattr(self, name) <= limit:
                raise ConfigError(f"{name} must be in 1..{limit}, got {getattr(self, name)}")
        for name in ("autosave_keyframes", "autosave_period_s", "input_timeout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if not self.stamp_max_ahead_s > 0:
            raise ConfigError(f"stamp_max_ahead_s must be > 0, got {self.stamp_max_ahead_s}")
        if not 1 <= self.qos_depth <= 100:
            raise ConfigError(f"qos_depth must be in 1..100, got {self.qos_depth}")
        if self.diagnostics_period_s < MIN_DIAGNOSTICS_PERIOD_S:
            raise ConfigError(f"diagnostics_period_s must be >= {MIN_DIAGNOSTICS_PERIOD_S}, "
                              f"got {self.diagnostics_period_s}")
        for name in ("keyframe_min_interval_s", "keyframe_min_distance_m"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("odom_max_offset_s", "relocalization_position_std_m", "relocalization_orientation_std_rad"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        intrinsics = (self.camera_fx, self.camera_fy, self.camera_cx, self.camera_cy)
        if any(intrinsics) and not (self.camera_fx > 0 and self.camera_fy > 0):
            raise ConfigError(f"camera_fx and camera_fy must be > 0 when intrinsics are given, got {intrinsics}")
        if len(self.base_to_camera) != 7 or not all(math.isfinite(v) for v in self.base_to_camera):
            raise ConfigError(f"base_to_camera must be 7 finite numbers x y z qx qy qz qw, got {self.base_to_camera}")
        if abs(math.sqrt(sum(v * v for v in self.base_to_camera[3:])) - 1) > 1e-3:
            raise ConfigError(f"base_to_camera quaternion {self.base_to_camera[3:]} is not unit length")
        if not self.map_frame:
            raise ConfigError("map_frame must not be empty")
        self.loop_closure_config()  # validates the loop-closure and geometry values (same names)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_width, self.input_height) if self.input_width else None

    def loop_closure_config(self) -> LoopClosureConfig:
        geometry = GeometryConfig(max_features=self.max_features, ratio_test=self.ratio_test,
                                  ransac_threshold_px=self.ransac_threshold_px, min_inliers=self.min_inliers,
                                  estimator=self.essential_estimator, features=self.verification_features,
                                  min_keypoints=self.min_keypoints, min_cosine=self.xfeat_min_cosine,
                                  max_image_width=self.xfeat_max_image_width, xfeat_runtime=self.xfeat_runtime,
                                  min_image_width=self.xfeat_min_image_width, min_image_pixels=self.min_image_pixels)
        normalization = (normalization_for(self.model) if self.sequence_normalization == "auto"
                         else self.sequence_normalization)
        sequence = SequenceConfig(length=self.sequence_length, min_velocity=self.sequence_min_velocity,
                                  max_velocity=self.sequence_max_velocity,
                                  velocity_steps=self.sequence_velocity_steps, reverse=self.sequence_reverse,
                                  normalization=normalization)
        return LoopClosureConfig(top_k=self.top_k, score_threshold=self.score_threshold,
                                 exclude_recent_s=self.exclude_recent_s, consistency_k=self.consistency_k,
                                 consistency_window=self.consistency_window, verification=self.verification,
                                 geometry=geometry, verification_threads=self.verification_threads,
                                 sequence=sequence,
                                 sequence_score_threshold=self.sequence_score_threshold,
                                 sequence_candidates=self.sequence_candidates)

    def intrinsics(self) -> CameraIntrinsics | None:
        if not self.camera_fx:
            return None
        return CameraIntrinsics(self.camera_fx, self.camera_fy, self.camera_cx, self.camera_cy)


def parameter_defaults() -> dict[str, tuple[object, str]]:
    """``{name: (default, help)}`` for every parameter, in declaration order."""
    return {
        f.name: (f.default_factory() if f.default_factory is not MISSING else f.default, f.metadata["help"])
        for f in fields(NodeConfig)
    }


def config_from_parameters(values: dict) -> NodeConfig:
    """Build and validate the config from ROS parameter values (``ConfigError`` names the parameter)."""
    defaults = parameter_defaults()
    for name, value in values.items():
        if value is None and name in defaults:  # a params file's [] or null arrives as "not set"
            raise ConfigError(f"invalid parameter: {name}: no value (an empty list [] or null reaches ROS as "
                              f"'not set'); give a value like the default {defaults[name][0]!r}, or leave it out")
    plain = {k: list(v) if not isinstance(v, (str, bytes)) and hasattr(v, "__len__") else v for k, v in values.items()}
    try:
        return from_dict(NodeConfig, plain)
    except ConfigError as e:
        raise ConfigError(f"invalid parameter: {e}") from None


def foreign_parameter_sections(argv: list[str], node_name: str = NODE_NAME) -> list[tuple[str, str]]:
    """``(params file, section)`` for every ``--params-file`` section that applies to no node named
    ``node_name``: ROS ignores those parameters without a word (issue 20, U4).

    A section applies when its key is the node name, with any namespace (``/ns/structvpr_node``),
    or holds a wildcard (``/**``). Unreadable files are left to ROS to report.
    """
    import yaml

    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]
    found = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        for key in data if isinstance(data, dict) else ():
            name = str(key).rstrip("/").rsplit("/", 1)[-1]
            if "*" not in str(key) and name != node_name:
                found.append((path, str(key)))
    return found
