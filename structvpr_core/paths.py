"""Where the real data and weights live (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``$STRUCTVPR_SHARED`` or ``<repo>/../shared`` (datasets, ESPNet weights)."""
    env = os.environ.get("STRUCTVPR_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"
