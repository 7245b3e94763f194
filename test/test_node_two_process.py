"""The node as its own process, started the documented way, talking to this test over DDS."""

import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import yaml
from ros_helpers import NS_PER_S, Client, image_msg, ros_context
from rclpy.executors import SingleThreadedExecutor

from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.data.images import read_rgb
from structvpr_core.paths import REPO_ROOT
from structvpr_ros.node_config import NODE_NAME

MAP_FRAMES = list(range(33200, 33260, 10))  # 6 summer places
QUERY_FRAME = 33240  # winter revisit of place 4
STARTUP_TIMEOUT_S = 15.0  # python + torch + rclpy import on a busy 2-core machine


@contextmanager
def _node_process(params: dict, *overrides: str, preexec_fn=None):
    """The node started the documented way (params file, ``-p`` overrides); killed on the way out if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", params["file"],
         *[arg for o in overrides for arg in ("-p", o)]],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _connected_client(proc: subprocess.Popen, context, **topics) -> Client:
    """A test client of the node process, once the node is reachable (else the node's output says why)."""
    client = Client(context, SingleThreadedExecutor(context=context), **topics)
    try:
        client.wait_connected(STARTUP_TIMEOUT_S)
    except AssertionError:
        raise AssertionError(f"node process not reachable; its output:\n{_stop(proc)[1]}") from None
    return client


def _params_file(tmp_path, other_sections: dict | None = None, **values) -> dict:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": values}, **(other_sections or {})}))
    return {"file": str(path)}


def _stop(proc: subprocess.Popen, *signals: int) -> tuple[int, str]:
    """SIGINT (Ctrl-C), or the given signals one after the other, and wait for a clean exit; kill only if it hangs."""
    for sig in signals or (signal.SIGINT,):
        if proc.poll() is None:
            proc.send_signal(sig)
    try:
        output, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"node did not exit within 10 s of SIGINT:\n{output}")
    return proc.returncode, output


def test_node_process_answers_queries_saves_its_map_and_exits_cleanly(shared, tmp_path):
    root = shared / "data/nordland64"
    summer = [read_rgb(root / f"summer/images-{f:05d}.png") for f in MAP_FRAMES]
    query = read_rgb(root / f"winter/images-{QUERY_FRAME:05d}.png")
    params = _params_file(tmp_path, model="raw-pixel", keyframe_min_interval_s=0.0, score_threshold=0.2,
                          top_k=2, map_dir=str(tmp_path / "map"), diagnostics_period_s=0.5, sequence_length=1,
                          verification="off",
                          # a section under another node name: ROS ignores it, the node says so
                          other_sections={"structvpr": {"ros__parameters": {"top_k": 9}}})
    # -p overrides the params file; a misspelt parameter is reported, not silently ignored
    with _node_process(params, "image_topic:=camera/image", "scor_threshold:=0.9") as proc:
        with ros_context() as context:
            client = _connected_client(proc, context, image_topic="camera/image")
            for i, rgb in enumerate(summer):
                client.send_image(image_msg(rgb, (100 + i) * NS_PER_S))
            answer = client.send_image(image_msg(query, 1000 * NS_PER_S))
            scores = RawPixelEncoder().encode(summer) @ RawPixelEncoder().encode([query])[0]
            expected = [i for i in np.argsort(-scores)[:2] if scores[i] >= 0.2]
            assert [c.map_id for c in answer.candidates] == expected
            assert [c.score for c in answer.candidates] == pytest.approx(scores[expected], abs=1e-5)
            assert answer.candidates[0].map_id == MAP_FRAMES.index(QUERY_FRAME)
            assert answer.query_id == len(summer)
            saved = client.call("save_map")
            assert saved.success and f"saved {len(summer) + 1} keyframes" in saved.message
            assert (tmp_path / "map" / "meta.json").is_file()
            client.latest_diagnostics(lambda v: v["map_size"] == str(len(summer) + 1))
        code, output = _stop(proc)
    assert code == 0, output
    assert "ready: mode mapping" in output
    assert "ignoring unknown parameter(s) ['scor_threshold']" in output
    assert f"params file {params['file']}: section 'structvpr' is for another node and is ignored" in output


def test_node_process_with_an_invalid_parameter_exits_with_a_message_naming_it(tmp_path):
    params = _params_file(tmp_path, model="raw-pixel")
    with _node_process(params, "mode:=slam") as proc:
        output, _ = proc.communicate(timeout=STARTUP_TIMEOUT_S + 10)
    assert proc.returncode == 2, output
    assert "refusing to start: invalid parameter: mode: 'slam' is not one of ['mapping', 'localization']" in output
    assert "Traceback" not in output


def _map_some_frames(proc, shared, n: int) -> None:
    root = shared / "data/nordland64"
    with ros_context() as context:
        client = _connected_client(proc, context)
        for i, frame in enumerate(MAP_FRAMES[:n]):
            client.send_image(image_msg(read_rgb(root / f"summer/images-{frame:05d}.png"), (100 + i) * NS_PER_S))


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,),
                                     # Ctrl-C twice / launch escalating to SIGTERM: the save goes on
                                     (signal.SIGINT, signal.SIGINT, signal.SIGTERM)])
def test_a_mapping_run_ended_by_a_signal_saves_every_keyframe(shared, tmp_path, signals):
    from structvpr_core.retrieval.map_database import MapDatabase

    params = _params_file(tmp_path, model="raw-pixel", keyframe_min_interval_s=0.0, map_dir=str(tmp_path / "map"))
    with _node_process(params) as proc:
        _map_some_frames(proc, shared, 5)  # no ~/save_map call: before issue 20 all 5 were lost
        code, output = _stop(proc, *signals)
    assert code == 0, output
    assert "saved 5 keyframes" in output and "(on shutdown)" in output
    assert len(MapDatabase.load(tmp_path / "map")) == 5


def test_a_failed_save_on_shutdown_is_fatal_and_says_what_is_lost(shared, tmp_path):
    from fault_helpers import file_size_limit

    params = _params_file(tmp_path, model="raw-pixel", keyframe_min_interval_s=0.0, map_dir=str(tmp_path / "map"))
    # every file the save writes is capped at 4 KB (the index alone is 40 KB): the disk is "full"
    with _node_process(params, preexec_fn=file_size_limit(4096)) as proc:
        _map_some_frames(proc, shared, 5)
        code, output = _stop(proc)
    assert code == 1, output
    assert "5 keyframes since the last save are LOST" in output and "disk full or file size limit" in output
    assert "Traceback" not in output
    assert not (tmp_path / "map").exists() and not list(tmp_path.glob(".map.saving-*"))


def test_a_read_only_map_dir_is_refused_at_start_in_mapping_mode(tmp_path):
    from fault_helpers import without_root_file_override

    parent = tmp_path / "maps"
    parent.mkdir()
    parent.chmod(0o555)  # the save's temporary sibling could not be created
    params = _params_file(tmp_path, model="raw-pixel", map_dir=str(parent / "map"))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", params["file"]],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S + 10,
            preexec_fn=without_root_file_override)
    finally:
        parent.chmod(0o755)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert f"refusing to start: map_dir {parent / 'map'}: cannot write in {parent}: Permission denied" in output
    assert "Traceback" not in output
