"""The node as its own process, started the documented way, talking to this test over DDS."""

import signal
import subprocess
import sys

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


def _start_node(params: dict, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "structvpr_ros.node", "--ros-args", "--params-file", params["file"],
         *[arg for o in overrides for arg in ("-p", o)]],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _params_file(tmp_path, **values) -> dict:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": values}}))
    return {"file": str(path)}


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGINT (Ctrl-C) and wait for a clean exit; kill only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
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
                          verification="off")
    # -p overrides the params file; a misspelt parameter is reported, not silently ignored
    proc = _start_node(params, "image_topic:=camera/image", "scor_threshold:=0.9")
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            client = Client(context, executor, image_topic="camera/image")
            try:
                client.wait_connected(STARTUP_TIMEOUT_S)
            except AssertionError:
                raise AssertionError(f"node process not reachable; its output:\n{_stop(proc)[1]}") from None
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
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, output
    assert "ready: mode mapping" in output
    assert "ignoring unknown parameter(s) ['scor_threshold']" in output


def test_node_process_with_an_invalid_parameter_exits_with_a_message_naming_it(tmp_path):
    params = _params_file(tmp_path, model="raw-pixel")
    proc = _start_node(params, "mode:=slam")
    try:
        output, _ = proc.communicate(timeout=STARTUP_TIMEOUT_S + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, output
    assert "refusing to start: invalid parameter: mode: 'slam' is not one of ['mapping', 'localization']" in output
    assert "Traceback" not in output
