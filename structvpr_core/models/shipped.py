"""Where the checkpoints that ship with the package live, so a config can name one by file name.

A source checkout keeps them in ``training/checkpoints/``; a ROS 2 install (colcon / ament_python)
puts them in ``share/structvpr_ros/checkpoints/`` (setup.py ``data_files``).
"""

from __future__ import annotations

from pathlib import Path

from structvpr_core.paths import REPO_ROOT

PACKAGE = "structvpr_ros"
DEFAULT_MODEL = "lite0_realres_none_seed2_fp16.pt"  # chosen on val: docs/realres.md (why not the whitened one: its card)


def checkpoint_dirs() -> list[Path]:
    dirs = [REPO_ROOT / "training" / "checkpoints"]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # no ROS 2 install: a source checkout
        return dirs
    try:
        dirs.append(Path(get_package_share_directory(PACKAGE)) / "checkpoints")
    except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (not a sourced workspace)
        pass
    return dirs


def find_checkpoint(spec: str) -> Path | None:
    """``spec`` as a path if it exists, else a bare file name looked up among the shipped checkpoints."""
    path = Path(spec)
    if path.exists():
        return path
    if path.name == spec:  # a bare name, not a (mistyped) path
        for folder in checkpoint_dirs():
            if (folder / spec).is_file():
                return folder / spec
    return None
