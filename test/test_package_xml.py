"""package.xml (both packages) declares what the build and the code need, as rosdep keys, checked
against the imports of the installed code, the launch file and setup.py, both ways: nothing used is
missing, nothing declared is unused. rosdep itself cannot run here (no access to its database):
the Python keys below were looked up in rosdistro's rosdep/python.yaml."""

import ast
import importlib.metadata
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from structvpr_core.paths import REPO_ROOT

# PyPI distribution -> its rosdep key. A distribution not here has no key (torch: python3-pytorch-pip
# is an end-of-life alias): it must be listed in package.xml's "pip only" comment and pinned.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "pyyaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "pytest": "python3-pytest",
    "setuptools": "python3-setuptools",
}
# ROS packages the launch file imports that have no PyPI wheel (so are not in this venv)
ROS_PACKAGES_NOT_INSTALLABLE_HERE = {"launch", "launch_ros"}
# names that are not rosdep keys: `rosdep install --from-paths src` fails on them
NOT_ROSDEP_KEYS = {"ament_python"}
OWN = {"structvpr_core", "structvpr_ros", "__future__"}
RUN_DEPS = ("depend", "exec_depend")


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _deps(package_xml: Path, *kinds: str) -> set[str]:
    root = ET.parse(package_xml).getroot()
    return {e.text.strip() for kind in kinds for e in root.findall(kind)}


def _imports(paths) -> set[str]:
    """Top-level modules imported anywhere in these files (lazy imports inside functions too), and
    packages looked up without importing them (``find_spec("name")``, e.g. for their data files)."""
    out = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        strings = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                   and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                   for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                out.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
                  and node.args):
                arg = node.args[0]
                name = arg.value if isinstance(arg, ast.Constant) else strings.get(getattr(arg, "id", None))
                if isinstance(name, str):
                    out.add(name.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names and m not in OWN}


def _is_ros_package(module: str) -> bool:
    return module in ROS_PACKAGES_NOT_INSTALLABLE_HERE or (Path(sys.prefix) / "share" / module / "package.xml").is_file()


def _keys_for(modules: set[str]) -> tuple[set[str], set[str]]:
    """(rosdep keys, pip-only distributions) these third-party modules need."""
    distributions = importlib.metadata.packages_distributions()
    keys, pip_only = set(), set()
    for module in modules:
        if _is_ros_package(module):
            keys.add(module)
            continue
        assert module in distributions, f"imported module {module!r} comes from no installed distribution"
        for dist in map(_normalize, distributions[module]):
            (keys.add(ROSDEP_KEYS[dist]) if dist in ROSDEP_KEYS else pip_only.add(dist))
    return keys, pip_only


def _pinned() -> set[str]:
    lines = [line for name in ("requirements.txt", "requirements-nodeps.txt")
             for line in (REPO_ROOT / name).read_text().splitlines()]
    return {_normalize(re.split(r"[\[=]", line)[0]) for line in lines if "==" in line and not line.startswith("#")}


def _pip_only_comment() -> set[str]:
    text = (REPO_ROOT / "package.xml").read_text()
    found = re.search(r"pip only \(no rosdep key\), pinned in requirements.txt \(.*?\):(.*?)-->", text, re.S)
    assert found, "package.xml has no 'pip only (no rosdep key), pinned in requirements.txt (...): ...' comment"
    return set(map(_normalize, found.group(1).split()))


def test_run_dependencies_are_exactly_what_the_installed_code_and_the_launch_file_import():
    code = [*REPO_ROOT.glob("structvpr_core/**/*.py"), *REPO_ROOT.glob("structvpr_ros/**/*.py"),
            *REPO_ROOT.glob("launch/*.py")]
    keys, pip_only = _keys_for(_imports(code))
    declared = _deps(REPO_ROOT / "package.xml", *RUN_DEPS)
    assert keys - declared == set(), f"imported but not in package.xml: {sorted(keys - declared)}"
    assert declared - keys == set(), f"in package.xml but never imported: {sorted(declared - keys)}"
    listed = _pip_only_comment()
    assert pip_only - listed == set(), f"imported, no rosdep key, not in package.xml's pip-only list: {sorted(pip_only - listed)}"
    assert listed - _pinned() == set(), f"package.xml lists as pip only, requirements.txt does not pin: {sorted(listed - _pinned())}"


def test_build_and_test_dependencies_are_declared_and_every_name_is_a_rosdep_key_or_package():
    package_xml = REPO_ROOT / "package.xml"
    build_keys, _ = _keys_for(_imports([REPO_ROOT / "setup.py"]))
    assert build_keys == _deps(package_xml, "buildtool_depend") == {"python3-setuptools"}
    assert "pytest" in _imports(REPO_ROOT.glob("test/*.py")) and _deps(package_xml, "test_depend") == {"python3-pytest"}
    root = ET.parse(package_xml).getroot()
    assert root.findtext("export/build_type") == "ament_python"
    for xml in (package_xml, REPO_ROOT / "structvpr_msgs" / "package.xml"):
        names = {e.text.strip() for e in ET.parse(xml).getroot() if e.tag.endswith("depend")}
        assert names & NOT_ROSDEP_KEYS == set(), f"{xml}: {sorted(names & NOT_ROSDEP_KEYS)} are not rosdep keys"
        for name in names:
            assert name in ROSDEP_KEYS.values() or _is_ros_package(name), \
                f"{xml}: {name!r} is neither a known rosdep key nor a ROS package"


def test_executables_are_installed_where_ros2_run_and_launch_ros_look():
    cfg = (REPO_ROOT / "setup.cfg").read_text()
    name = ET.parse(REPO_ROOT / "package.xml").getroot().findtext("name")
    assert f"install_scripts=$base/lib/{name}" in cfg and f"script_dir=$base/lib/{name}" in cfg


def test_interface_package_declares_what_its_cmake_finds_and_generates_against():
    pkg = REPO_ROOT / "structvpr_msgs"
    cmake = (pkg / "CMakeLists.txt").read_text()
    found = set(re.findall(r"find_package\((\w+)\s+REQUIRED\)", cmake))
    generated_against = set(re.search(r"DEPENDENCIES([\w\s]+)\)", cmake).group(1).split())
    xml = pkg / "package.xml"
    build = _deps(xml, "buildtool_depend", "build_depend", "depend")
    assert found - build == set(), f"CMakeLists.txt finds {sorted(found - build)}, package.xml does not declare them"
    assert generated_against <= _deps(xml, "depend"), "message dependencies must be <depend> (build and run)"
    assert "rosidl_default_runtime" in _deps(xml, "exec_depend")
    assert ET.parse(xml).getroot().findtext("member_of_group") == "rosidl_interface_packages"
    assert all(_is_ros_package(name) for name in found | generated_against)
