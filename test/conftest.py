"""Shared test setup: the real data beside the repository is required, not optional."""

import os

import pytest

from structvpr_core.paths import shared_dir

# Tests run many small torch ops; extra threads only add contention on 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared():
    root = shared_dir()
    if not (root / "data" / "nordland64").is_dir():
        pytest.fail(
            f"real test data not found at {root} (expected data/nordland64, data/camvid_sample, "
            "models/espnet). Put the shared folder beside the repository or set STRUCTVPR_SHARED."
        )
    return root
