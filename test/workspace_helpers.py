"""The README's ROS 2 workspace commands, run as written: a colcon workspace in a temporary folder.

The README block (after the ``workspace commands`` marker) is the single source: every line but
the last (set-up, ``colcon build`` of both packages, ``structvpr --help``) runs in one bash, as a
user pastes it; the shell's environment at the end (venv activated, ``install/setup.bash``
sourced) is kept, and the last line (the node) runs later in that environment.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from structvpr_core.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
MARKER = "<!-- workspace commands:"
BUILD_TIMEOUT_S = 240  # measured 8-30 s on this 2-core machine (idle to busy); under pytest-timeout's 300 s
# Set by a developer's shell or by this test run; a fresh terminal has none of them. Left in, they
# would let the build or the node use this checkout instead of the workspace, or (the ROS wheels'
# start-up hook: its guard variable and the library path it set) keep the venv's python from
# adding the wheels' libraries to a library path that `. install/setup.bash` has replaced.
UNSET = ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "LD_LIBRARY_PATH",
         "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "VIRTUAL_ENV", "VIRTUAL_ENV_PROMPT", "PYTHONHOME")


def readme_commands() -> list[str]:
    """The command lines of the README's workspace block (comment-only lines left out)."""
    text = README.read_text(encoding="utf-8")
    at = text.find(MARKER)
    assert at >= 0, f"{README} has no '{MARKER} ...' line before its workspace block"
    block = re.search(r"```bash\n(.*?)\n```", text[at:], re.S)
    assert block, f"no ```bash block after the '{MARKER}' line in {README}"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]  # the shell's environment after the set-up and build lines
    output: str  # what those lines printed (bash -x trace included)
    node_command: str  # the README's last line

    @property
    def install(self) -> Path:
        return self.root / "install"

    @property
    def share(self) -> Path:
        return self.install / "structvpr_ros" / "share" / "structvpr_ros"

    @property
    def executables(self) -> Path:
        return self.install / "structvpr_ros" / "lib" / "structvpr_ros"

    def run(self, command: str, timeout_s: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A command in the workspace's shell environment (after ``. install/setup.bash``)."""
        return subprocess.run(["bash", "-c", command], cwd=self.root, env=env or self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s)


def fresh_shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["STRUCTVPR"] = str(REPO_ROOT)
    return env


def build_workspace(root: Path) -> Workspace:
    """Run the README's set-up and build lines in ``root`` (an empty folder)."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    assert venv_python.exists(), f"{venv_python} not found: run scripts/setup.sh first (the README's block needs it)"
    lines = readme_commands()
    env_dump = root.parent / f"{root.name}.env"
    script = "\n".join(["set -ex", *lines[:-1], f"env -0 > {env_dump}"])
    try:
        done = subprocess.run(["bash", "-c", script], cwd=root, env=fresh_shell_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the README's workspace commands took over {BUILD_TIMEOUT_S} s:\n{e.output}") from None
    if done.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((root / "log").glob("latest_build/*/stderr.log")))
        raise AssertionError(f"the README's workspace commands failed (exit {done.returncode}):\n{done.stdout}\n{logs}")
    env = dict(item.split("=", 1) for item in env_dump.read_text().split("\0") if "=" in item)
    return Workspace(root=root, env=env, output=done.stdout, node_command=lines[-1])
