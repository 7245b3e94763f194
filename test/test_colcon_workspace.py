"""The ROS 2 workspace path for real: the README's commands build both packages with colcon (PyPI ROS 2
wheels as the underlay), and the installed node, params file and default model work from the install.

The workspace is built once per session (``colcon_workspace`` in conftest.py, the commands in
workspace_helpers.py); the node here is the README's last line, in the shell environment the
lines before it leave behind.
"""

import filecmp
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from ros_helpers import NS_PER_S, Client, image_msg, ros_context, spin_until
from rclpy.executors import SingleThreadedExecutor

from structvpr_core.data.images import read_rgb
from structvpr_core.paths import REPO_ROOT
from structvpr_ros.node_config import NODE_NAME
from workspace_helpers import readme_commands

MAP_IMAGES = ["Image000.jpg", "Image080.jpg", "Image160.jpg"]  # Gardens Point day_left: three distinct places
# the route is walked again 900 s later: at the shipped defaults (sequences of 3, XFeat verification
# required) the third revisit closes the loop onto the last map place, verified
REVISIT = len(MAP_IMAGES) - 1
STARTUP_TIMEOUT_S = 120.0  # python + torch + the ONNX export of the model on a busy 2-core machine
STOP_TIMEOUT_S = 20.0


def _installed_params(ws) -> dict:
    return yaml.safe_load((ws.share / "config" / "structvpr.yaml").read_text())[NODE_NAME]["ros__parameters"]


def _start_node(ws, log_path, env=None) -> subprocess.Popen:
    """The README's node line, in its own process group (what Ctrl-C in a terminal signals)."""
    env = dict(env or ws.env)
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):  # this test run's isolated DDS domain
        env[name] = os.environ[name]
    log = open(log_path, "w")
    try:
        return subprocess.Popen(["bash", "-c", ws.node_command], cwd=ws.root, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _stop(proc: subprocess.Popen, log_path) -> tuple[int, str]:
    """Ctrl-C (SIGINT to the process group) and wait for a clean exit; kill only if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"node did not exit within {STOP_TIMEOUT_S} s of SIGINT:\n{log_path.read_text()}")
    return proc.returncode, log_path.read_text()


def test_readme_block_builds_both_packages_and_the_installed_cli_runs(colcon_workspace):
    ws = colcon_workspace
    lines = readme_commands()
    assert "colcon build --base-paths src/structvpr_ros src/structvpr_ros/structvpr_msgs" in lines
    assert "Summary: 2 packages finished" in ws.output, ws.output
    assert "+ install/structvpr_ros/lib/structvpr_ros/structvpr --help" in ws.output  # bash -x trace
    assert "usage: structvpr [-h] COMMAND" in ws.output and "build-map" in ws.output
    # what runs after `. install/setup.bash` is the workspace's copy, not this checkout
    installed_by = {"structvpr_ros": "structvpr_ros", "structvpr_core": "structvpr_ros", "structvpr_msgs": "structvpr_msgs"}
    found = ws.run("python -c 'import importlib.util as u, sys; print(*(u.find_spec(m).origin for m in sys.argv[1:]))' "
                   + " ".join(installed_by))
    assert found.returncode == 0, found.stdout
    for (module, package), origin in zip(installed_by.items(), found.stdout.split()):
        assert origin.startswith(f"{ws.install / package}/"), f"{module} imports from {origin}, not the install"
    # the messages built by colcon (ament_cmake + rosidl) load their C type support
    msgs = ws.run("python -c 'from structvpr_msgs.msg import LoopClosure as m; m.__class__.__import_type_support__()'")
    assert msgs.returncode == 0, msgs.stdout
    # both executables, run by the venv's interpreter (the one with the ROS wheels)
    venv = Path(ws.env["VIRTUAL_ENV"])
    assert venv.resolve() == (REPO_ROOT / ".venv").resolve()
    for name in ("structvpr", "structvpr_node"):
        script = ws.executables / name
        assert os.access(script, os.X_OK), f"{script} is not an executable"
        assert script.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}", script.read_text()[:200]


def test_installed_node_answers_real_images_with_the_installed_params_file_and_model(colcon_workspace, shared, tmp_path):
    ws = colcon_workspace
    params_file = ws.share / "config" / "structvpr.yaml"
    assert f"--params-file {params_file.relative_to(ws.root)}" in ws.node_command
    assert filecmp.cmp(params_file, REPO_ROOT / "config" / "structvpr.yaml", shallow=False)
    params = _installed_params(ws)
    checkpoint = ws.share / "checkpoints" / f"{Path(params['model']).stem}.pt"  # the default model, installed
    assert filecmp.cmp(checkpoint, REPO_ROOT / "training" / "checkpoints" / checkpoint.name, shallow=False)
    # the installed library has no training/checkpoints of its own: the share directory is the only copy
    site = next((ws.install / "structvpr_ros" / "lib").glob("python3*/site-packages"))
    assert (site / "structvpr_core").is_dir() and not (site / "training").exists()

    images = [read_rgb(shared / "data/gardenspoint/day_left" / name) for name in MAP_IMAGES]
    log_path = tmp_path / "node.log"
    proc = _start_node(ws, log_path)
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            client = Client(context, executor, image_topic=params["image_topic"])
            try:
                spin_until(executor, lambda: proc.poll() is not None or (
                    client.image_pub.get_subscription_count() > 0
                    and client.node.count_publishers(f"/{NODE_NAME}/loop_closure") > 0),
                    STARTUP_TIMEOUT_S, "the installed node's topics")
                assert proc.poll() is None, "node exited"
            except AssertionError as e:
                raise AssertionError(f"{e}; its output:\n{_stop(proc, log_path)[1]}") from None
            answers = [client.send_image(image_msg(rgb, (100 + i) * NS_PER_S), timeout_s=30)
                       for i, rgb in enumerate(images)]
            assert [a.query_id for a in answers] == [0, 1, 2]
            assert all(a.candidates == [] for a in answers)  # each place once, all within exclude_recent_s
            *_, revisit = [client.send_image(image_msg(rgb, (1000 + i) * NS_PER_S), timeout_s=30)
                           for i, rgb in enumerate(images)]
        code, output = _stop(proc, log_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert revisit.query_id == 2 * len(images) - 1
    assert revisit.candidates, f"no loop closure for a revisited place:\n{output}"
    best = revisit.candidates[0]
    assert best.map_id == REVISIT and best.sequence_match and best.verified
    assert best.inliers >= params["min_inliers"]  # the same image: nearly every keypoint
    assert all(c.verified for c in revisit.candidates)  # verification is required
    assert code == 0, output
    assert f"model '{checkpoint.stem}'" in output and "ready: mode mapping" in output, output
    assert "Traceback" not in output, output


def test_installed_node_without_the_workspace_on_the_ament_prefix_path_refuses_naming_the_model(
        colcon_workspace, tmp_path):
    """Control: the node finds the model through the install's share directory and nowhere else."""
    ws = colcon_workspace
    env = dict(ws.env)
    ours = str(ws.install / "structvpr_ros")
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in env["AMENT_PREFIX_PATH"].split(os.pathsep) if p != ours)
    assert env["AMENT_PREFIX_PATH"] != ws.env["AMENT_PREFIX_PATH"], "the workspace was not on AMENT_PREFIX_PATH"
    log_path = tmp_path / "node.log"
    proc = _start_node(ws, log_path, env)
    try:
        proc.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 2, output
    assert "refusing to start" in output and _installed_params(ws)["model"] in output, output
    assert "Traceback" not in output, output
