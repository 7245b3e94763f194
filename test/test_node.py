"""StructVPRNode in-process with real rclpy (own Context per test), real faiss, real images."""

import json
import time

import cv2
import numpy as np
import pytest
from ros_helpers import (
    NS_PER_S,
    Client,
    diagnostic_values,
    image_msg,
    overrides,
    ros_context,
    spin_until,
    stamp,
    stamp_ns,
)
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.loop_closure.geometry import Verification, extract_features
from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.retrieval.sequence import SequenceConfig, SequenceMatcher, similarity_row, top_k
from structvpr_ros import outputs
from structvpr_ros.node import StartupError, StructVPRNode
from structvpr_ros.node import main as node_main
from test_map_database import interrupt_save

# Summer 33200..33400 is mapped; winter 33240..33310 revisits map places 4..11 (raw-pixel
# ranks the right place first on this stretch, see test_loop_closure.py).
MAP_FRAMES = list(range(33200, 33410, 10))
QUERY_FRAMES = list(range(33240, 33320, 10))
FIRST_QUERY_PLACE = MAP_FRAMES.index(QUERY_FRAMES[0])
SUMMER_T0, WINTER_T0 = 100, 1000  # stamps (s) of the first summer / winter image
PLACE_SPACING_M = 10.0  # odometry x of map place i is 10 * i
# raw-pixel: these tests are about the node's behaviour, and it needs no network; one rule at a time
# (single frames, no verification) unless a test asks for sequences or verification
BASE = dict(model="raw-pixel", image_topic="image", keyframe_min_interval_s=0.0, score_threshold=0.2, top_k=3,
            exclude_recent_s=30.0, diagnostics_period_s=0.2, sequence_length=1, sequence_score_threshold=3.0,
            verification="off")


@pytest.fixture(scope="module")
def nordland(shared):
    root = shared / "data/nordland64"
    summer = [read_rgb(root / f"summer/images-{f:05d}.png") for f in MAP_FRAMES]
    winter = [read_rgb(root / f"winter/images-{f:05d}.png") for f in QUERY_FRAMES]
    return summer, winter, RawPixelEncoder().encode(summer), RawPixelEncoder().encode(winter)


def _expected(summer_desc, query_desc, top_k=3, threshold=0.2):
    """Brute-force answer over the summer keyframes: [(map id, score)], best first."""
    scores = summer_desc @ query_desc
    return [(int(i), float(scores[i])) for i in np.argsort(-scores)[:top_k] if scores[i] >= threshold]


def _start(context, **params):
    node = StructVPRNode(context=context, parameter_overrides=overrides(**{**BASE, **params}))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    client = Client(context, executor)
    client.wait_connected()
    return node, client


def _map_summer(client, summer, with_odometry=True):
    for i, rgb in enumerate(summer):
        t = (SUMMER_T0 + i) * NS_PER_S
        if with_odometry:
            client.send_odometry(t, x=PLACE_SPACING_M * i)
        client.send_image(image_msg(rgb, t))


def _wait_handled(node, executor, n, timeout_s=10.0):
    """Until the node has dealt with n frames in some way (processed, skipped, invalid, dropped)."""
    s = node.stats
    spin_until(executor, lambda: s.processed + s.skipped + s.invalid + s.dropped >= n, timeout_s, f"{n} frames handled")


def test_mapping_then_winter_pass_gives_the_right_loop_closures_on_every_output(nordland):
    summer, winter, summer_desc, winter_desc = nordland
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom")
        _map_summer(client, summer)
        # the summer pass spans 20 s < exclude_recent_s: it never closes a loop with itself
        assert [m.query_id for m in client.loop_closures] == list(range(len(summer)))
        assert all(m.candidates == [] for m in client.loop_closures)

        for j, rgb in enumerate(winter):
            t = (WINTER_T0 + j) * NS_PER_S
            place = FIRST_QUERY_PLACE + j
            client.send_odometry(t, x=PLACE_SPACING_M * place)
            msg = client.send_image(image_msg(rgb, t))
            assert msg.header.stamp == stamp(t) and msg.query_stamp == stamp(t) and msg.header.frame_id == "camera"
            assert msg.query_id == len(summer) + j  # the map id the query got
            # winter keyframes added so far are < 30 s old: only summer keyframes can match
            expected = _expected(summer_desc, winter_desc[j])
            assert [c.map_id for c in msg.candidates] == [i for i, _ in expected]
            assert [c.score for c in msg.candidates] == pytest.approx([s for _, s in expected], abs=1e-5)
            assert abs(msg.candidates[0].map_id - place) <= 1  # the right place (+-1 frame)
            for c in msg.candidates:
                assert stamp_ns(c.stamp) == (SUMMER_T0 + c.map_id) * NS_PER_S and c.frame_id == "camera"
                assert c.inliers == -1 and not c.verified and not c.has_relative_pose

        spin_until(client.executor, lambda: len(client.lio_sam) == len(winter) and len(client.markers) == len(winter),
                   5, "LIO-SAM and marker outputs")
        for j, (lio, markers) in enumerate(zip(client.lio_sam, client.markers)):
            best = client.loop_closures[len(summer) + j].candidates[0].map_id
            assert list(lio.data) == [WINTER_T0 + j, SUMMER_T0 + best]
            line = markers.markers[0]
            assert line.header.stamp == stamp((WINTER_T0 + j) * NS_PER_S) and line.header.frame_id == "map"
            assert [p.x for p in line.points] == [PLACE_SPACING_M * (FIRST_QUERY_PLACE + j), PLACE_SPACING_M * best]
        assert client.relocalizations == []  # mapping mode

        # mapping grows the map by every processed frame; poses came from odometry
        assert len(node.db) == len(summer) + len(winter)
        assert node.db.keyframe(len(summer) + 2).pose[0] == PLACE_SPACING_M * (FIRST_QUERY_PLACE + 2)
        diag = client.latest_diagnostics(lambda v: v["frames_processed"] == str(len(summer) + len(winter)))
        assert diag["map_size"] == str(len(summer) + len(winter)) and diag["frames_dropped"] == "0"
        assert diag["loop_closures"] == str(len(winter)) and diag["_level"] == 0
        assert float(diag["latency_ms_max"]) > 0 and float(diag["encoder_ms_mean"]) > 0
        assert float(diag["verification_ms_mean"]) == 0  # verification off
        node.destroy_node()


def test_mapping_with_sequences_publishes_sequence_matches_and_their_span(nordland):
    """sequence_length 4 in mapping mode: the node's answers equal the core matcher fed the same keyframes."""
    summer, winter, summer_desc, winter_desc = nordland
    length = 4
    with ros_context() as context:
        node, client = _start(context, sequence_length=length, sequence_min_velocity=1.0, sequence_max_velocity=1.0,
                              sequence_velocity_steps=1, sequence_score_threshold=-100.0)
        assert node.detector.config.sequence.normalization == "local_contrast"  # auto, for raw-pixel
        _map_summer(client, summer, with_odometry=False)
        winter_stamps = [(WINTER_T0 + j) * NS_PER_S for j in range(len(winter))]
        for j, rgb in enumerate(winter):
            client.send_image(image_msg(rgb, winter_stamps[j]))
        node.destroy_node()

    # reference: the core matcher over the same keyframes, the map growing by each one
    matcher = SequenceMatcher(SequenceConfig(length=length, min_velocity=1, max_velocity=1, velocity_steps=1,
                                             normalization="local_contrast"))
    descriptors = np.concatenate([summer_desc, winter_desc])
    stamps = np.array([(SUMMER_T0 + i) * NS_PER_S for i in range(len(summer))] + winter_stamps)
    for q, msg in enumerate(client.loop_closures):
        result = matcher.push(similarity_row(descriptors[q], descriptors[:q]),
                              stamps[:q] <= stamps[q] - 30 * NS_PER_S)
        expected = [i for i in top_k(result.scores, 3) if np.isfinite(result.scores[i])]
        assert [c.map_id for c in msg.candidates] == expected
        assert [c.score for c in msg.candidates] == pytest.approx(result.scores[expected].tolist(), rel=1e-5)
        assert msg.sequence_length == min(q + 1, length) == result.length
        assert msg.sequence_start_query_id == q - (msg.sequence_length - 1)
        assert stamp_ns(msg.sequence_start_stamp) == stamps[msg.sequence_start_query_id]
        for c in msg.candidates:  # velocity 1: the sequence's first query matched map_id - (L' - 1)
            assert c.sequence_match and c.sequence_velocity == 1.0
            assert c.sequence_start_map_id == c.map_id - (msg.sequence_length - 1)
    # the summer pass never matches itself (30 s exclusion); full winter sequences find their places
    assert all(not m.candidates for m in client.loop_closures[:len(summer)])
    for j in range(length - 1, len(winter)):
        assert abs(client.loop_closures[len(summer) + j].candidates[0].map_id - (FIRST_QUERY_PLACE + j)) <= 1


def test_saved_map_reloads_localization_matches_without_growing_and_mapping_grows(nordland, tmp_path):
    summer, winter, summer_desc, winter_desc = nordland
    map_dir = tmp_path / "map"
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom", map_dir=str(map_dir))
        _map_summer(client, summer)
        response = client.call("save_map")
        assert response.success, response.message
        node.destroy_node()
    meta = json.loads((map_dir / "meta.json").read_text())
    assert meta["counts"] == {"keyframes": len(summer), "with_pose": len(summer), "with_features": 0}
    assert {p.name for p in map_dir.iterdir()} >= {"index.faiss", "keyframes.npz", "features.npz"}

    with ros_context() as context:
        node, client = _start(context, mode="localization", map_dir=str(map_dir))
        assert len(node.db) == len(summer)
        for j, rgb in enumerate(winter):
            # stamps inside the summer pass's time span: localization never excludes "recent" keyframes
            t = (SUMMER_T0 + j) * NS_PER_S
            msg = client.send_image(image_msg(rgb, t))
            assert msg.query_id == j
            expected = _expected(summer_desc, winter_desc[j])
            assert [(c.map_id, pytest.approx(c.score, abs=1e-5)) for c in msg.candidates] == expected
        spin_until(client.executor, lambda: len(client.relocalizations) == len(winter), 5, "relocalizations")
        for j, reloc in enumerate(client.relocalizations):
            best = client.loop_closures[j].candidates[0].map_id
            assert reloc.header.stamp == stamp((SUMMER_T0 + j) * NS_PER_S) and reloc.header.frame_id == "map"
            assert reloc.pose.pose.position.x == PLACE_SPACING_M * best  # the matched keyframe's pose
            cov = np.reshape(reloc.pose.covariance, (6, 6))
            assert np.allclose(np.diag(cov), [100.0] * 3 + [0.35**2] * 3)
        assert len(node.db) == len(summer)  # localization never adds
        refused = client.call("reset_map")
        assert not refused.success and "localization" in refused.message
        node.destroy_node()

    with ros_context() as context:  # mapping on top of the saved map grows it
        node, client = _start(context, map_dir=str(map_dir))
        assert len(node.db) == len(summer)
        msg = client.send_image(image_msg(winter[0], (WINTER_T0 + 0) * NS_PER_S))
        assert msg.query_id == len(summer) and len(node.db) == len(summer) + 1
        reset = client.call("reset_map")
        assert reset.success and len(node.db) == 0
        node.destroy_node()


def test_invalid_messages_are_counted_skipped_and_the_node_keeps_working(nordland):
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, compressed_topic="compressed")
        header = Header(stamp=stamp(5 * NS_PER_S), frame_id="camera")
        good = image_msg(summer[0], 0)
        bad_step = Image(header=header, height=good.height, width=good.width, encoding="rgb8",
                         step=good.width * 3 - 1, data=bytes((good.width * 3 - 1) * good.height))
        depth = Image(header=header, height=4, width=4, encoding="16UC1", step=8, data=bytes(32))
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(summer[1], cv2.COLOR_RGB2BGR))[1].tobytes()
        corrupt = CompressedImage(header=header, format="jpeg", data=jpeg[:2] + bytes(100) + jpeg[102:])
        client.image_pub.publish(bad_step)
        _wait_handled(node, client.executor, 1)
        client.image_pub.publish(depth)
        _wait_handled(node, client.executor, 2)
        client.compressed_pub.publish(corrupt)
        _wait_handled(node, client.executor, 3)
        assert node.stats.invalid == 3 and node.stats.processed == 0 and client.loop_closures == []

        # still working: a valid JPEG and a valid raw image are processed
        ok = client.send_image(CompressedImage(header=Header(stamp=stamp(6 * NS_PER_S), frame_id="camera"),
                                               format="jpeg", data=jpeg))
        assert ok.query_id == 0
        assert client.send_image(image_msg(summer[2], 7 * NS_PER_S)).query_id == 1
        diag = client.latest_diagnostics(lambda v: v["frames_processed"] == "2")
        assert diag["frames_invalid"] == "3" and diag["processing_errors"] == "0"
        # the period(s) with the invalid frames raised a warning (an error where none was usable)
        assert any(v["_level"] >= 1 and "invalid image messages" in v["_message"]
                   for v in map(diagnostic_values, client.diagnostics))
        node.destroy_node()


def test_flooding_drops_stale_frames_and_processes_the_newest(nordland):
    summer = nordland[0]
    frames = 30
    with ros_context() as context:
        # a real network at 320x240 takes >= 10 ms per frame on CPU, while a burst of 30
        # images reaches the callback within a few ms; deep queues so DDS itself loses none
        node, client = _start(context, model="random-mobilenetv2", input_width=320, input_height=240,
                              device="cpu", score_threshold=-1.0, qos_depth=frames)
        burst = client.node.create_publisher(Image, "image", QoSProfile(depth=frames, reliability=QoSReliabilityPolicy.RELIABLE))
        spin_until(client.executor, lambda: burst.get_subscription_count() > 0, 5, "burst publisher matched")
        for i in range(frames):
            burst.publish(image_msg(summer[i % len(summer)], (10 + i) * NS_PER_S))
        spin_until(client.executor, lambda: node.stats.received == frames, 10, "all images received")
        last = stamp((10 + frames - 1) * NS_PER_S)
        spin_until(client.executor, lambda: any(m.header.stamp == last for m in client.loop_closures), 15,
                   "the newest frame to be processed")
        s = node.stats
        assert s.received == frames and s.processed + s.dropped == frames, vars(s)
        assert s.dropped >= frames // 3, vars(s)
        assert len(client.loop_closures) == s.processed < frames
        client.latest_diagnostics(lambda v: v["frames_dropped"] == str(s.dropped))
        assert any(v["_level"] == 1 and "frames dropped" in v["_message"]
                   for v in map(diagnostic_values, client.diagnostics))
        node.destroy_node()


def test_keyframes_need_enough_stamp_time_and_distance_and_a_jump_back_restarts(nordland):
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom", keyframe_min_interval_s=1.0, keyframe_min_distance_m=5.0)
        # frames 0.5 s and 2 m apart: the time rule alone passes every 2nd, distance every 3rd
        for k in range(10):
            t = (50 * NS_PER_S) + k * NS_PER_S // 2
            client.send_odometry(t, x=2.0 * k)
            client.image_pub.publish(image_msg(summer[k], t))
            _wait_handled(node, client.executor, k + 1)
        # the node counts a frame once its answer is published; under load it reaches us later
        spin_until(client.executor, lambda: len(client.loop_closures) >= 4, 5, "the keyframes' answers")
        processed = [stamp_ns(m.header.stamp) for m in client.loop_closures]
        assert processed == [50 * NS_PER_S + k * NS_PER_S // 2 for k in (0, 3, 6, 9)]
        assert node.stats.skipped == 6
        # a bag restarted from an earlier stamp: processed at once, not skipped
        client.send_odometry(10 * NS_PER_S, x=0.0)
        client.send_image(image_msg(summer[0], 10 * NS_PER_S))
        node.destroy_node()


def test_use_sim_time_stamps_diagnostics_with_sim_time_and_outputs_with_image_stamps(nordland):
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, use_sim_time=True)
        sim_now = 5000 * NS_PER_S
        client.clock_pub.publish(Clock(clock=stamp(sim_now)))
        spin_until(client.executor, lambda: node.get_clock().now().nanoseconds == sim_now, 5, "/clock")
        msg = client.send_image(image_msg(summer[0], 42 * NS_PER_S))
        assert msg.header.stamp == stamp(42 * NS_PER_S)
        # the diagnostics timer runs on the wall clock (a paused bag must not silence it),
        # its messages carry the node's (simulated) time
        diag = client.latest_diagnostics(lambda v: v["frames_processed"] == "1")
        assert diag["_stamp_ns"] == sim_now
        # an unstamped image (stamp 0) takes its arrival time on the node's clock
        before = len(client.loop_closures)
        client.image_pub.publish(image_msg(summer[1], 0))
        spin_until(client.executor, lambda: len(client.loop_closures) > before, 5, "the unstamped image's answer")
        assert client.loop_closures[-1].header.stamp == stamp(sim_now)
        node.destroy_node()


def test_geometric_verification_annotates_candidates_with_inliers_and_relative_pose(shared):
    folder = shared / "data/camvid_sample/images"
    images = [read_rgb(folder / f"{n}.png") for n in ("Seq05VD_f04980", "0001TP_008550", "0001TP_010350")]
    with ros_context() as context:
        node, client = _start(context, verification="annotate", score_threshold=-1.0, exclude_recent_s=0.0)
        for i, rgb in enumerate(images):
            client.send_image(image_msg(rgb, (1 + i) * NS_PER_S))
        h, w = images[2].shape[:2]
        zoomed = cv2.resize(images[2][30:h - 30, 40:w - 40], (w, h))
        msg = client.send_image(image_msg(zoomed, 10 * NS_PER_S))
        best = msg.candidates[0]
        assert best.map_id == 2 and best.verified and best.inliers >= 100 and best.has_relative_pose
        cov = np.reshape(best.relative_pose.covariance, (6, 6))
        assert np.all(np.diag(cov)[:3] == -1.0) and np.all(np.diag(cov)[3:] > 0)  # no scale; rotation known
        q = best.relative_pose.pose.orientation
        assert np.linalg.norm([q.x, q.y, q.z, q.w]) == pytest.approx(1.0)
        assert all(not c.verified and not c.has_relative_pose and 0 <= c.inliers < 30 for c in msg.candidates[1:])
        assert node.db.keyframe(0).features is not None  # stored while mapping, for later verification
        # a period that processed frames: ORB extraction at least, and the candidates' verification
        diag = client.latest_diagnostics(lambda v: float(v["processed_rate_hz"]) > 0)
        assert float(diag["verification_ms_mean"]) > 0
        node.destroy_node()


@pytest.mark.parametrize("params, message", [
    ({"mode": "mapp"}, "mode: 'mapp' is not one of"),
    ({"top_k": 0}, "top_k must be in 1..1000, got 0"),
    ({"score_threshold": "high"}, "score_threshold: expected a number"),
    ({"model": "/nonexistent/student.pt"}, "model: model '/nonexistent/student.pt' is neither"),
    ({"mode": "localization"}, "localization' needs map_dir"),
    ({"image_topic": "", "compressed_topic": ""}, "would get no images"),
    ({"cpu_threads": -1}, "cpu_threads must be in 0.."),
    ({"verification_threads": 0}, "verification_threads must be in 1.."),
    ({"runtime": "tensorrt"}, "runtime: 'tensorrt' is not one of"),
    ({"model": "random-mobilenetv2", "input_width": 64, "input_height": 32, "device": "cpu", "precision": "fp16"},
     "precision 'fp16' needs CUDA"),
    ({"sequence_length": 0}, "sequence_length must be in 1..1000, got 0"),
    ({"sequence_min_velocity": 2.0}, "min_velocity <= max_velocity"),
    ({"sequence_candidates": "all"}, "sequence_candidates: 'all' is not one of"),
    ({"essential_estimator": "lmeds"}, "essential_estimator: 'lmeds' is not one of"),
    ({"verification_features": "sift"}, "verification_features: 'sift' is not one of"),
    ({"xfeat_min_cosine": 2.0}, "min_cosine must be in"),
    ({"sequence_normalization": "seqslam"}, "sequence_normalization: 'seqslam' is not one of"),
])
def test_invalid_parameters_make_the_node_refuse_to_start(params, message):
    with ros_context() as context:
        with pytest.raises(StartupError, match=message.replace("(", r"\(")):
            StructVPRNode(context=context, parameter_overrides=overrides(**{**BASE, **params}))


def test_a_map_built_with_another_model_is_refused(tmp_path, nordland):
    other = MapDatabase(ModelIdentity("some-other-network", RawPixelEncoder().dim))
    other.add(nordland[2][0], 0, "camera")
    other.save(tmp_path / "map")
    with ros_context() as context:
        with pytest.raises(StartupError, match="was built with model 'some-other-network'"):
            StructVPRNode(context=context, parameter_overrides=overrides(**BASE, map_dir=str(tmp_path / "map")))


def test_a_map_with_another_local_feature_kind_is_refused(tmp_path, shared):
    rgb = read_rgb(shared / "data/gardenspoint/day_right/Image010.jpg")
    orb_map = MapDatabase(ModelIdentity.of_encoder(RawPixelEncoder()))
    orb_map.add(RawPixelEncoder().encode([rgb])[0], 0, "camera", features=extract_features(rgb, 500))
    orb_map.save(tmp_path / "map")
    with ros_context() as context:
        with pytest.raises(StartupError, match="verification_features: the map .* holds orb features, "
                                               "verification_features is 'xfeat'"):
            StructVPRNode(context=context, parameter_overrides=overrides(
                **{**BASE, "verification": "annotate"}, map_dir=str(tmp_path / "map"), mode="localization",
                verification_features="xfeat"))


def test_xfeat_verification_verifies_a_night_query_against_the_right_day_keyframe(shared):
    # Gardens Point night_right 10 is day_right 10 (ORB cannot verify this pair: too few inliers)
    def frame(name):
        return cv2.resize(read_rgb(shared / f"data/gardenspoint/{name}.jpg"), (640, 480), interpolation=cv2.INTER_AREA)

    with ros_context() as context:
        node, client = _start(context, verification="annotate", verification_features="xfeat",
                              essential_estimator="magsac", min_inliers=15, score_threshold=-1.0,
                              exclude_recent_s=0.0)
        for i, n in enumerate((10, 70, 130)):
            client.send_image(image_msg(frame(f"day_right/Image{n:03d}"), (1 + i) * NS_PER_S))
        assert node.db.feature_kind == "xfeat" and len(node.db.keyframe(0).features) == node.config.max_features
        msg = client.send_image(image_msg(frame("night_right/Image010"), 10 * NS_PER_S))
        verified = [c.map_id for c in msg.candidates if c.verified]
        assert verified == [0], [(c.map_id, c.inliers) for c in msg.candidates]
        assert next(c for c in msg.candidates if c.map_id == 0).has_relative_pose
        node.destroy_node()


def test_relocalization_composes_the_verified_camera_rotation_into_the_base_pose():
    # keyframe: base at (3, 4, 0) with yaw 30 deg; camera = default optical mount
    yaw = np.radians(30)
    keyframe_pose = np.array([3, 4, 0, 0, 0, np.sin(yaw / 2), np.cos(yaw / 2)])
    # query camera turned 10 deg about its own y axis (down) = 10 deg to the right = base yaw -10 deg
    turn = np.radians(10)
    R = cv2.Rodrigues(np.array([0, turn, 0]))[0]
    rotation_cov = np.diag([1e-4, 2e-4, 3e-4])  # about camera x, y, z
    v = Verification(matches=100, inliers=80, verified=True, rotation=R, translation=np.zeros(3),
                     pure_rotation=True, rotation_covariance=rotation_cov)
    pose, cov = outputs.relocalization_pose(keyframe_pose, [0, 0, 0, -0.5, 0.5, -0.5, 0.5], v, 10.0, 0.35)
    x, y, z, w = pose[3:]
    assert np.degrees(2 * np.arctan2(z, w)) == pytest.approx(20.0, abs=1e-6) and abs(x) + abs(y) < 1e-9
    assert np.allclose(pose[:3], [3, 4, 0])  # no scale from monocular geometry: position stays
    # camera z (forward) -> map direction of the base x axis (yaw 30), camera y (down) -> map -z
    c, s = np.cos(yaw), np.sin(yaw)
    forward, left = np.array([c, s, 0]), np.array([-s, c, 0])
    rot_cov = cov[3:, 3:]
    assert forward @ rot_cov @ forward == pytest.approx(3e-4)
    assert left @ rot_cov @ left == pytest.approx(1e-4)  # camera x = right = -left
    assert rot_cov[2, 2] == pytest.approx(2e-4)
    assert np.allclose(cov[:3, :3], np.eye(3) * 100.0)
    # unverified: the keyframe pose itself with the configured orientation uncertainty
    pose, cov = outputs.relocalization_pose(keyframe_pose, [0, 0, 0, -0.5, 0.5, -0.5, 0.5], None, 10.0, 0.35)
    assert np.allclose(pose, keyframe_pose) and np.allclose(np.diag(cov)[3:], 0.35**2)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[3] >= 0 else -q
        assert np.allclose(outputs.matrix_to_quat(outputs.quat_to_matrix(q)), q)


def _diagnostics_levels(client) -> list[tuple[int, str]]:
    return [(v["_level"], v["_message"]) for v in map(diagnostic_values, client.diagnostics)]


def test_uniform_frames_are_skipped_as_invalid_and_a_period_of_only_failures_is_an_error(nordland):
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context)
        # lens cap, tunnel, over-exposure: raw-pixel has nothing to describe (a zero vector faiss refuses)
        for k, value in enumerate((0, 0, 255)):
            client.image_pub.publish(image_msg(np.full_like(summer[0], value), (1 + k) * NS_PER_S))
            _wait_handled(node, client.executor, k + 1)
        assert node.stats.invalid == 3 and node.stats.errors == 0 and client.loop_closures == []
        assert len(node.db) == 0
        # a period in which every frame failed says so as an ERROR, not OK or a mere warning
        spin_until(client.executor, lambda: any(level == 2 and "none usable" in message
                                                for level, message in _diagnostics_levels(client)),
                   5, "an ERROR /diagnostics for a period of only invalid frames")
        # a real frame afterwards is processed: the node is fine, the frames were not
        assert client.send_image(image_msg(summer[1], 10 * NS_PER_S)).query_id == 0
        node.destroy_node()


def test_processing_errors_are_counted_per_period_and_raise_diagnostics_to_error(nordland, tmp_path):
    import torch

    from structvpr_core.models.branches import ModelConfig, RGBBranch
    from structvpr_core.models.checkpoint import save_checkpoint

    # a checkpoint whose weights overflow float32 in the first layers (finite, so they pass the load
    # check that refuses NaN weights): every descriptor is NaN
    model = RGBBranch(ModelConfig("rgb", (64, 32)))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)
    save_checkpoint(tmp_path / "diverged.pt", model)
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, model=str(tmp_path / "diverged.pt"), device="cpu")
        for k in range(3):
            client.image_pub.publish(image_msg(summer[k], (1 + k) * NS_PER_S))
            spin_until(client.executor, lambda: node.stats.errors == k + 1, 10, f"{k + 1} processing errors")
        assert node.stats.processed == 0 and client.loop_closures == []
        diag = client.latest_diagnostics(lambda v: v["processing_errors"] == "3")
        spin_until(client.executor, lambda: any(level == 2 and "processing errors" in message
                                                for level, message in _diagnostics_levels(client)),
                   5, "an ERROR /diagnostics naming the processing errors")
        assert diag["frames_processed"] == "0"
        node.destroy_node()


def test_odometry_with_nan_or_a_bad_quaternion_is_rejected_on_arrival(nordland):
    summer = nordland[0]

    def odometry(t_ns, position, quaternion):
        odom = Odometry(header=Header(stamp=stamp(t_ns), frame_id="map"), child_frame_id="base_link")
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        p.x, p.y, p.z = position
        q.x, q.y, q.z, q.w = quaternion
        return odom

    bad = [((float("nan"), 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),  # NaN position
           ((1.0, 2.0, 0.0), (0.0, 0.0, 0.0, 0.0)),  # zero quaternion (an unset orientation)
           ((1.0, 2.0, 0.0), (0.0, 0.0, 0.0, 2.0)),  # not unit length
           ((1.0, 2.0, 0.0), (0.0, 0.0, float("inf"), 1.0))]
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom")
        for k, (position, quaternion) in enumerate(bad):
            t = (1 + k) * NS_PER_S
            client.odom_pub.publish(odometry(t, position, quaternion))
            spin_until(client.executor, lambda: node.stats.odometry_rejected == k + 1, 5, f"odometry {k} rejected")
            client.send_image(image_msg(summer[k], t))
            assert node.db.keyframe(k).pose is None  # no pose rather than a NaN one
        # a slightly off-unit quaternion (float32 round-off) is a rotation: kept, normalised
        t = 10 * NS_PER_S
        client.odom_pub.publish(odometry(t, (3.0, 4.0, 0.0), (0.0, 0.0, 0.0, 1.001)))
        client.send_image(image_msg(summer[5], t))
        np.testing.assert_allclose(node.db.keyframe(4).pose, [3, 4, 0, 0, 0, 0, 1])
        diag = client.latest_diagnostics(lambda v: v["odometry_rejected"] == "4")
        assert diag["processing_errors"] == "0"
        assert any(level == 1 and "odometry messages rejected" in message
                   for level, message in _diagnostics_levels(client))
        node.destroy_node()


@pytest.mark.parametrize("params, message", [
    ({"keyframe_min_interval_s": float("nan")}, "keyframe_min_interval_s must be a finite number, got nan"),
    ({"exclude_recent_s": float("inf")}, "exclude_recent_s must be a finite number, got inf"),
    ({"ransac_threshold_px": float("nan")}, "ransac_threshold_px must be a finite number"),
    ({"exclude_recent_s": 1e300}, "exclude_recent_s must be <= 1e+09 s"),
    ({"diagnostics_period_s": 0.001}, "diagnostics_period_s must be >= 0.05"),
    ({"max_pixels": 0}, "max_pixels must be in 1..400000000, got 0"),
    # size-like parameters are bounded (issue 20 C1/C2/T2): each of these exhausted memory or crashed
    ({"sequence_length": 100_000_000}, "sequence_length must be in 1..1000, got 100000000"),
    ({"sequence_velocity_steps": 1_000_000_000}, "sequence_velocity_steps must be in 1..100, got 1000000000"),
    ({"cpu_threads": 100_000}, "cpu_threads must be in 0..[0-9]* \\(4x this machine's cores\\), got 100000"),
    ({"verification_threads": 100_000}, "verification_threads must be in 1..[0-9]* \\(4x this machine's cores\\)"),
    ({"max_features": 2_000_000_000}, "max_features must be in 5..100000, got 2000000000"),
    ({"top_k": 1_000_000}, "top_k must be in 1..1000, got 1000000"),
    ({"consistency_k": 10**9}, "consistency_k must be in 1..10000"),
    ({"max_pixels": 10**12}, "max_pixels must be in 1..400000000"),
    ({"qos_depth": 10**6}, "qos_depth must be in 1..100"),
    ({"autosave_keyframes": -1}, "autosave_keyframes must be >= 0"),
    ({"input_timeout_s": -1.0}, "input_timeout_s must be >= 0"),
    ({"stamp_max_ahead_s": 0.0}, "stamp_max_ahead_s must be > 0"),
    ({"map_dir": "   "}, "map_dir '   ' starts or ends with spaces"),
])
def test_non_finite_and_out_of_range_parameters_make_the_node_refuse_to_start(params, message):
    with ros_context() as context:
        with pytest.raises(StartupError, match=message.replace("+", r"\+")):
            StructVPRNode(context=context, parameter_overrides=overrides(**{**BASE, **params}))


def test_a_malformed_params_file_is_a_clear_refusal_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("structvpr_node:\n  ros__parameters:\n    base_to_camera: [0.0, \"x\"]\n")
    assert node_main(["--ros-args", "--params-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "refusing to start: bad ROS arguments" in err and "Couldn't parse params file" in err
    assert "Traceback" not in err


def test_images_above_max_pixels_are_invalid_before_decoding(nordland):
    summer = nordland[0]  # 64x32 = 2048 pixels
    png = cv2.imencode(".png", cv2.cvtColor(summer[0], cv2.COLOR_RGB2BGR))[1].tobytes()
    with ros_context() as context:
        node, client = _start(context, compressed_topic="compressed", max_pixels=2000)
        client.image_pub.publish(image_msg(summer[0], NS_PER_S))
        _wait_handled(node, client.executor, 1)
        client.compressed_pub.publish(CompressedImage(header=Header(stamp=stamp(2 * NS_PER_S), frame_id="camera"),
                                                      format="png", data=png))
        _wait_handled(node, client.executor, 2)
        assert node.stats.invalid == 2 and node.stats.processed == 0
        node.destroy_node()


@pytest.mark.parametrize("mode", ["mapping", "localization"])
def test_a_save_interrupted_between_its_renames_is_refused_with_the_recovery_step(nordland, tmp_path, mode):
    map_dir = tmp_path / "map"
    db = MapDatabase(ModelIdentity(RawPixelEncoder().name, RawPixelEncoder().dim))
    db.add(nordland[2][0], NS_PER_S, "camera")
    db.save(map_dir)
    interrupt_save(map_dir, "between_renames")
    with ros_context() as context:
        # mapping mode used to start with an empty map here, and its next save dropped the old one
        with pytest.raises(StartupError, match=r"interrupted save left the previous map at .*\.map\.previous-"):
            StructVPRNode(context=context, parameter_overrides=overrides(**BASE, mode=mode, map_dir=str(map_dir)))


def test_default_model_is_the_shipped_student_and_answers_a_real_image(nordland):
    """No model parameter: the node loads the shipped default by its bare file name and describes a frame."""
    from structvpr_core.models.shipped import DEFAULT_MODEL, find_checkpoint
    from structvpr_core.runtime.input_rule import InputRule

    assert find_checkpoint(DEFAULT_MODEL) is not None
    params = {k: v for k, v in BASE.items() if k != "model"}
    with ros_context() as context:
        node = StructVPRNode(context=context, parameter_overrides=overrides(**params))
        try:
            assert node.config.model == DEFAULT_MODEL
            # its val-chosen input rule (docs/input_budget.md): multi-scale, 51200 + 28800 px at the camera's aspect
            assert node.encoder.dim == 472 and node.encoder.input_rule == InputRule(pixels=51200, second_pixels=28800)
            d = node.encoder.encode([nordland[0][0]])
            assert d.shape == (1, 472) and abs(float((d * d).sum()) - 1.0) < 1e-4
        finally:
            node.destroy_node()


def test_frames_between_keyframes_are_skipped_on_arrival_not_dropped_behind_verification(shared):
    """A 10 Hz camera, keyframes every 0.5 s, each verified with XFeat (tens of ms): the frames in
    between never wait for the worker, so none is dropped and every keyframe slot is taken."""
    day = [cv2.resize(read_rgb(shared / f"data/gardenspoint/day_right/Image{n:03d}.jpg"), (640, 480))
           for n in range(0, 40, 2)]
    with ros_context() as context:
        node, client = _start(context, keyframe_min_interval_s=0.5, verification="require",
                              verification_features="xfeat", score_threshold=-1.0)
        for k, rgb in enumerate(day):  # a 10 Hz camera: stamps and wall time 0.1 s apart
            client.image_pub.publish(image_msg(rgb, 100 * NS_PER_S + k * NS_PER_S // 10))
            until = time.monotonic() + 0.1
            while time.monotonic() < until:
                client.executor.spin_once(timeout_sec=0.01)
        spin_until(client.executor, lambda: node.stats.received == len(day) and len(client.loop_closures) == 4,
                   30, "20 frames received and 4 keyframes answered")
        assert [stamp_ns(m.header.stamp) for m in client.loop_closures] == [
            100 * NS_PER_S + k * NS_PER_S // 2 for k in range(4)]
        assert (node.stats.skipped, node.stats.dropped) == (16, 0)
        assert len(node.db) == 4 and all(node.db.keyframe(i).features.kind == "xfeat" for i in range(4))
        node.destroy_node()
