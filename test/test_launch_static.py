"""The launch file cannot run here (no `launch`/`launch_ros` packages), so check it statically against
setup.py, package.xml, the params file and the node's declared parameters, and check that what it
references exists in a colcon install tree (the README's workspace, built by the conftest fixture)."""

import ast
import os
import xml.etree.ElementTree as ET
from dataclasses import fields

import yaml

from structvpr_core.paths import REPO_ROOT
from structvpr_ros.node_config import NODE_NAME, NodeConfig

LAUNCH = REPO_ROOT / "launch" / "structvpr.launch.py"
PARAMS = REPO_ROOT / "config" / "structvpr.yaml"
# declared by rclpy itself for every node, listed in the params file on purpose
RCLPY_PARAMETERS = {"use_sim_time"}


def _constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = <literal> assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _launch_node_call() -> tuple[dict[str, ast.expr], dict[str, object]]:
    tree = ast.parse(LAUNCH.read_text(encoding="utf-8"), filename=str(LAUNCH))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert len(calls) == 1, f"expected one launch_ros Node(...) in {LAUNCH}, found {len(calls)}"
    return {k.arg: k.value for k in calls[0].keywords}, _constants(tree)


def _value(expr: ast.expr, constants: dict[str, object]):
    if isinstance(expr, ast.Name):
        return constants[expr.id]
    return ast.literal_eval(expr)


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(s.replace(" ", "").split("=", 1) for s in scripts)
    raise AssertionError("setup.py has no entry_points")


def test_launch_file_starts_the_installed_console_script_of_this_package():
    kwargs, constants = _launch_node_call()
    executable = _value(kwargs["executable"], constants)
    package = _value(kwargs["package"], constants)
    scripts = _console_scripts()
    assert executable in scripts, f"launch executable {executable!r} not in setup.py console_scripts {sorted(scripts)}"
    assert scripts[executable] == "structvpr_ros.node:main"
    assert package == ET.parse(REPO_ROOT / "package.xml").getroot().findtext("name")
    assert _value(kwargs["name"], constants) == NODE_NAME


def test_launch_file_uses_the_installed_params_file_and_remaps_the_image_inputs():
    text = LAUNCH.read_text(encoding="utf-8")
    assert 'get_package_share_directory(PACKAGE), "config", "structvpr.yaml"' in text
    # setup.py installs config/*.yaml into share/<package>/config
    assert '"config/*.yaml"' in (REPO_ROOT / "setup.py").read_text()
    kwargs, constants = _launch_node_call()
    remapped = {ast.literal_eval(pair.elts[0]) for pair in kwargs["remappings"].elts}
    params = yaml.safe_load(PARAMS.read_text())[NODE_NAME]["ros__parameters"]
    assert params["image_topic"] in remapped  # the default image input is the one remapped


def test_params_file_lists_exactly_the_declared_parameters():
    data = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    assert list(data) == [NODE_NAME], f"params file must configure exactly '{NODE_NAME}', has {list(data)}"
    keys = set(data[NODE_NAME]["ros__parameters"])
    declared = {f.name for f in fields(NodeConfig)} | RCLPY_PARAMETERS
    assert keys - declared == set(), f"params file sets undeclared parameters {sorted(keys - declared)}"
    assert declared - keys == set(), f"params file misses declared parameters {sorted(declared - keys)}"


def test_params_file_values_are_the_defaults_and_each_has_a_comment():
    lines = PARAMS.read_text(encoding="utf-8").splitlines()
    params = yaml.safe_load("\n".join(lines))[NODE_NAME]["ros__parameters"]
    defaults = NodeConfig()
    for name, value in params.items():
        if name in RCLPY_PARAMETERS:
            continue
        assert value == getattr(defaults, name), f"{name}: params file {value!r} != default {getattr(defaults, name)!r}"
        row = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        above = row - 1
        while lines[above].strip().split(":")[0] in params:  # a group shares one comment (camera_fx..cy)
            above -= 1
        assert lines[above].strip().startswith("#"), f"parameter {name} has no comment above it"


def _calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH.read_text(encoding="utf-8"), filename=str(LAUNCH))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _launch_arguments() -> dict[str, dict[str, ast.expr]]:
    """DeclareLaunchArgument(name, default_value=..., description=...) by name."""
    out = {}
    for call in _calls("DeclareLaunchArgument"):
        out[ast.literal_eval(call.args[0])] = {k.arg: k.value for k in call.keywords}
    return out


def test_launch_file_compiles_and_declares_exactly_the_arguments_it_uses():
    compile(LAUNCH.read_text(encoding="utf-8"), str(LAUNCH), "exec")
    used = {ast.literal_eval(call.args[0]) for call in _calls("LaunchConfiguration")}
    declared = set(_launch_arguments())
    assert used == declared, f"used but not declared: {sorted(used - declared)}, declared but unused: {sorted(declared - used)}"
    assert all("description" in kw and "default_value" in kw for kw in _launch_arguments().values())


def test_launch_defaults_match_the_params_file_and_the_node_parameters():
    params = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))[NODE_NAME]["ros__parameters"]
    node_parameters = {f.name for f in fields(NodeConfig)}
    arguments = _launch_arguments()
    # params_file: the installed config/structvpr.yaml (the path computed at the top of the function)
    assert ast.unparse(arguments["params_file"]["default_value"]) == "default_params"
    # use_sim_time: a launch-level override of the params file's value, with the same default
    assert ast.literal_eval(arguments["use_sim_time"]["default_value"]) == str(params["use_sim_time"]).lower()
    kwargs, _ = _launch_node_call()
    overridden = {ast.literal_eval(k) for d in kwargs["parameters"].elts if isinstance(d, ast.Dict) for k in d.keys}
    assert overridden <= RCLPY_PARAMETERS | node_parameters, f"launch sets undeclared parameters {sorted(overridden)}"
    # each remapping: (the node's input name, the launch argument named after the node parameter)
    for pair in kwargs["remappings"].elts:
        source = ast.literal_eval(pair.elts[0])
        argument = ast.literal_eval(pair.elts[1].args[0])
        assert argument in node_parameters and argument.endswith("_topic"), f"{argument}: not a node topic parameter"
        if params[argument]:  # on by default: the params file subscribes under the name remapped
            assert params[argument] == source, f"remaps {source!r}, the params file's {argument} is {params[argument]!r}"
        else:  # off by default: the argument says how to turn it on under the name remapped
            description = ast.literal_eval(arguments[argument]["description"])
            assert f"{argument}: {source}" in description, f"{argument}: {description!r} should say '{argument}: {source}'"


def test_what_the_launch_file_references_exists_in_the_install_tree(colcon_workspace):
    """Resolved in the sourced workspace the way ros2 launch / launch_ros do: the launch file from
    share/<package>/launch, Node(package, executable) from <prefix>/lib/<package>/, the params file
    from get_package_share_directory (the launch file's own call)."""
    ws = colcon_workspace
    kwargs, constants = _launch_node_call()
    package, executable = _value(kwargs["package"], constants), _value(kwargs["executable"], constants)
    resolve = ws.run(
        "python -c 'import os, sys; from ament_index_python.packages import get_package_prefix, get_package_share_directory as share; "
        f"print(share(\"{package}\"), os.path.join(get_package_prefix(\"{package}\"), \"lib\", \"{package}\", \"{executable}\"))'")
    assert resolve.returncode == 0, resolve.stdout
    share, executable_path = resolve.stdout.split()
    assert share == str(ws.share)
    assert os.access(executable_path, os.X_OK), f"launch_ros would not find {executable_path}"
    installed_launch = ws.share / "launch" / LAUNCH.name
    assert installed_launch.read_bytes() == LAUNCH.read_bytes()
    assert (ws.share / "config" / "structvpr.yaml").read_bytes() == PARAMS.read_bytes()
    assert (ws.share / "config" / "fastdds_shm.xml").is_file()  # named in the launch file's docstring
