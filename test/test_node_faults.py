"""The node under the bad inputs of issue 20's audit: real rclpy over loopback, real images and files.

Each test fails without its fix: featureless frames (S1), saving on shutdown / autosave /
failed saves (D1), odometry frame and staleness (S4), bad stamps (S7), a silent or
mistyped image topic (S5), an empty localization map (S8), bad topic names (T1), empty
list parameters (U4).
"""

import numpy as np
import pytest
from ros_helpers import NS_PER_S, Client, diagnostic_values, image_msg, ros_context, spin_until, stamp
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_ros.node import StartupError, StructVPRNode
from structvpr_ros.node import main as node_main
from test_node import BASE, _start, _wait_handled, nordland  # noqa: F401  (nordland: the fixture)


def _levels(client) -> list[tuple[int, str]]:
    return [(v["_level"], v["_message"]) for v in map(diagnostic_values, client.diagnostics)]


def _wait_diagnostic(client, level: int, text: str, timeout_s: float = 5.0) -> None:
    spin_until(client.executor, lambda: any(lv == level and text in msg for lv, msg in _levels(client)),
               timeout_s, f"a /diagnostics level {level} saying {text!r}")


def _saved_keyframes(map_dir) -> int | None:
    try:
        return len(MapDatabase.load(map_dir))
    except (OSError, ValueError):
        return None


def _wait_saved(client, map_dir, n: int) -> None:
    """The worker saves after publishing the frame's answer: wait for the map on disk to hold n."""
    spin_until(client.executor, lambda: _saved_keyframes(map_dir) == n, 5, f"{n} keyframes saved in {map_dir}")


def _featureless_frames(like: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20)
    h, w, _ = like.shape
    big = (480, 640, 3)
    return {
        "black": np.zeros(big, np.uint8),
        "dark noise": rng.integers(0, 16, big, dtype=np.uint8),
        "uniform grey": np.full(big, 128, np.uint8),
        "lens cap": np.clip(rng.normal(4, 2, big), 0, 255).astype(np.uint8),
        "black again": np.zeros((h, w, 3), np.uint8),
        "dark noise at 64x32": np.repeat(rng.integers(0, 16, (h, w, 1), dtype=np.uint8), 3, axis=2),
    }


@pytest.mark.parametrize("model", ["lite0_realres_none_seed2_fp16.pt", "raw-pixel"])
def test_featureless_frames_are_invalid_for_every_model_and_never_close_a_loop(nordland, model):
    summer = nordland[0]
    bad = _featureless_frames(summer[0])
    with ros_context() as context:
        # default thresholds of the node: without the check the learned model published a black frame
        # 36 s after another as a loop closure with score 1.000
        node, client = _start(context, model=model, score_threshold=0.5, exclude_recent_s=30.0)
        client.image_pub.publish(image_msg(bad["black"], 100 * NS_PER_S))
        _wait_handled(node, client.executor, 1, timeout_s=30)
        for i in range(3):
            client.send_image(image_msg(summer[i], (101 + i) * NS_PER_S))
        for k, (name, rgb) in enumerate(bad.items()):
            client.image_pub.publish(image_msg(rgb, (136 + k) * NS_PER_S))
            _wait_handled(node, client.executor, 4 + k + 1)
        assert node.stats.invalid == 1 + len(bad) and node.stats.errors == 0
        assert len(node.db) == 3  # only the real frames became keyframes
        assert [m.query_id for m in client.loop_closures] == [0, 1, 2] and client.lio_sam == []
        _wait_diagnostic(client, 1, "invalid image messages")
        assert client.latest_diagnostics(lambda v: v["frames_invalid"] == str(1 + len(bad)))
        node.destroy_node()


def test_mapping_autosaves_saves_on_destroy_and_reports_a_failed_save_as_an_error(nordland, tmp_path):
    summer = nordland[0]
    map_dir = tmp_path / "map"
    with ros_context() as context:
        node, client = _start(context, map_dir=str(map_dir), autosave_keyframes=3)
        for i in range(3):
            client.send_image(image_msg(summer[i], (100 + i) * NS_PER_S))
        _wait_saved(client, map_dir, 3)  # the autosave after the third keyframe
        # the next autosave cannot write: something else took the directory's place
        saved = map_dir.rename(tmp_path / "map_moved")
        map_dir.mkdir()
        (map_dir / "notes.txt").write_text("not a map")
        for i in range(3, 6):
            client.send_image(image_msg(summer[i], (100 + i) * NS_PER_S))
        _wait_diagnostic(client, 2, f"saving the map (autosave) to {map_dir} failed")
        assert client.latest_diagnostics(lambda v: v["unsaved_keyframes"] == "3")
        # the way clears: the next autosave (3 keyframes later) succeeds and the error goes
        (map_dir / "notes.txt").unlink()
        for i in range(6, 9):
            client.send_image(image_msg(summer[i], (100 + i) * NS_PER_S))
        _wait_saved(client, map_dir, 9)
        client.latest_diagnostics(lambda v: v["_level"] == 0 and v["unsaved_keyframes"] == "0")
        client.send_image(image_msg(summer[9], 109 * NS_PER_S))
        node.destroy_node()  # rclpy shutdown of an embedded node: the 10th keyframe is saved too
    assert len(MapDatabase.load(map_dir)) == 10 and saved.is_dir()


def test_autosave_by_period(nordland, tmp_path):
    import time

    summer = nordland[0]
    map_dir = tmp_path / "map"
    with ros_context() as context:
        node, client = _start(context, map_dir=str(map_dir), autosave_period_s=0.5)
        client.send_image(image_msg(summer[0], 100 * NS_PER_S))
        time.sleep(0.6)
        client.send_image(image_msg(summer[1], 101 * NS_PER_S))  # 0.5 s since the last save (or start)
        _wait_saved(client, map_dir, 2)
        client.send_image(image_msg(summer[2], 102 * NS_PER_S))  # just saved: not yet again
        _wait_handled(node, client.executor, 3)
        assert _saved_keyframes(map_dir) == 2
        node.destroy_node()
    assert len(MapDatabase.load(map_dir)) == 3


@pytest.mark.parametrize("map_dir, message", [
    ("{tmp}/file.txt/map", "map_dir {tmp}/file.txt/map: {tmp}/file.txt is a file, not a directory"),
    ("{tmp}/file.txt", "map_dir {tmp}/file.txt is an existing file, not a directory"),
])
def test_an_unwritable_map_dir_is_refused_at_start_in_mapping_mode(tmp_path, map_dir, message):
    (tmp_path / "file.txt").write_text("x")
    with ros_context() as context:
        with pytest.raises(StartupError, match=message.format(tmp=tmp_path)):
            StructVPRNode(context=context, parameter_overrides=_overrides(map_dir=map_dir.format(tmp=tmp_path)))


def _overrides(**params):
    from ros_helpers import overrides

    return overrides(**{**BASE, **params})


def test_odometry_in_another_frame_is_rejected_and_stale_odometry_leaves_counted_poseless_keyframes(nordland):
    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom")
        t = 100 * NS_PER_S
        odom = _odometry(t, "odom")  # frame 'odom', map_frame 'map': markers would be drawn in the wrong frame
        client.odom_pub.publish(odom)
        client.send_image(image_msg(summer[0], t))
        assert node.db.keyframe(0).pose is None and node.stats.odometry_rejected == 1
        # odometry 10 s older than the image (odom_max_offset_s 0.1): the keyframe has no pose, counted
        client.odom_pub.publish(_odometry(t, "map"))
        client.send_image(image_msg(summer[1], t + 10 * NS_PER_S))
        assert node.db.keyframe(1).pose is None and node.stats.keyframes_without_pose == 2
        _wait_diagnostic(client, 1, "keyframes without pose")
        _wait_diagnostic(client, 1, "odometry messages rejected")
        # odometry in the right frame and time is used
        client.odom_pub.publish(_odometry(t + 20 * NS_PER_S, "map"))
        client.send_image(image_msg(summer[2], t + 20 * NS_PER_S))
        assert node.db.keyframe(2).pose is not None and node.stats.keyframes_without_pose == 2
        node.destroy_node()


def _odometry(t_ns: int, frame_id: str, sec=None, nanosec=None):
    from nav_msgs.msg import Odometry

    odom = Odometry(header=Header(stamp=stamp(t_ns), frame_id=frame_id), child_frame_id="base_link")
    if sec is not None:
        odom.header.stamp.sec, odom.header.stamp.nanosec = sec, nanosec
    odom.pose.pose.orientation.w = 1.0
    return odom


def test_negative_unnormalised_and_far_future_stamps_are_invalid(nordland):
    import time

    summer = nordland[0]
    with ros_context() as context:
        node, client = _start(context, odom_topic="odom")
        future = (time.time_ns() // NS_PER_S) + 10 * 86400  # 10 days ahead
        for k, (sec, nanosec) in enumerate([(-5, 0), (100, 1_500_000_000), (future, 0)]):
            msg = image_msg(summer[k], 0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            client.image_pub.publish(msg)
            _wait_handled(node, client.executor, k + 1)
            client.odom_pub.publish(_odometry(0, "map", sec, nanosec))
        spin_until(client.executor, lambda: node.stats.odometry_rejected == 3, 5, "3 odometry messages rejected")
        assert node.stats.invalid == 3 and len(node.db) == 0 and client.lio_sam == []
        # the keyframe clock was not moved by the far-future stamp: a normal frame still is a keyframe
        assert client.send_image(image_msg(summer[3], 200 * NS_PER_S)).query_id == 0
        node.destroy_node()


def test_a_silent_image_topic_warns_and_says_why(nordland):
    with ros_context() as context:
        node = StructVPRNode(context=context, parameter_overrides=_overrides(image_topic="cam", input_timeout_s=0.3))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = Client(context, executor)  # publishes on 'image', not 'cam'
        _wait_diagnostic(client, 1, " s: no publisher on /cam")
        assert any("no image for" in message for _, message in _levels(client))
        with ros_context() as other:  # another process's participant: the compressed stream on the raw topic
            import rclpy

            camera = rclpy.create_node("wrong_camera", context=other)
            camera.create_publisher(CompressedImage, "cam", 10)
            _wait_diagnostic(client, 1, "the publisher on /cam has type sensor_msgs/msg/CompressedImage, "
                                        "expected sensor_msgs/msg/Image")
            camera.destroy_node()
        node.destroy_node()


def test_localization_on_an_empty_map_warns(tmp_path, capfd):
    encoder = RawPixelEncoder()
    MapDatabase(ModelIdentity(encoder.name, encoder.dim)).save(tmp_path / "map")
    with ros_context() as context:
        node, client = _start(context, mode="localization", map_dir=str(tmp_path / "map"))
        _wait_diagnostic(client, 1, "the localization map holds 0 keyframes")
        node.destroy_node()
    assert "holds 0 keyframes: localization can never match" in capfd.readouterr().err


@pytest.mark.parametrize("name", ["image_topic", "compressed_topic", "odom_topic"])
def test_an_invalid_topic_name_is_refused_naming_the_parameter(name):
    with ros_context() as context:
        with pytest.raises(StartupError, match=f"{name}: 'bad topic!!' is not a valid ROS topic name"):
            StructVPRNode(context=context, parameter_overrides=_overrides(**{name: "bad topic!!"}))


def test_an_empty_list_parameter_is_a_clear_refusal(tmp_path, capfd):
    params = tmp_path / "params.yaml"
    params.write_text("structvpr_node:\n  ros__parameters:\n    model: raw-pixel\n    base_to_camera: []\n")
    assert node_main(["--ros-args", "--params-file", str(params)]) == 2
    err = capfd.readouterr().err
    assert "base_to_camera: no value (an empty list [] or null reaches ROS as 'not set')" in err
    assert "Traceback" not in err
