"""Shared test setup: the real data beside the repository is required, not optional."""

import os

import pytest

from structvpr_core.paths import shared_dir

# Set before any test module imports torch, so every test (and subprocess) uses 1 thread:
# on a 2-core machine with anything else running, 2 OpenMP threads
# measured 5-20x slower than 1 (benchmarks/README.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared():
    root = shared_dir()
    if not (root / "data" / "nordland64").is_dir():
        pytest.fail(
            f"real test data not found at {root} (expected data/nordland64, data/camvid_sample, "
            "models/espnet). Put the shared folder beside the repository or set STRUCTVPR_SHARED."
        )
    return root


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory):
    """The README's ROS 2 workspace commands run in a fresh folder: both packages built with colcon."""
    from workspace_helpers import build_workspace

    return build_workspace(tmp_path_factory.mktemp("colcon_ws"))
