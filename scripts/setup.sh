#!/usr/bin/env bash
# Fresh-machine setup (idempotent): .venv with every pinned dependency from the
# registries, the structvpr_msgs interfaces built against the PyPI ROS 2 wheels,
# and this package installed in editable mode. Re-running skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

req_hash=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
    echo "[setup] installing pinned requirements (torch is a ~5 GB CUDA build; a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
    echo "$req_hash" > "$VENV/.requirements.sha256"
else
    echo "[setup] requirements already installed"
fi

bash scripts/build_msgs.sh "$VENV"

if ! "$VENV/bin/python" -c "import structvpr_core, structvpr_ros" 2>/dev/null \
   || [ ! -x "$VENV/bin/structvpr" ]; then
    echo "[setup] installing structvpr_ros (editable)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi
"$VENV/bin/python" -c "import torch, faiss, rclpy, structvpr_msgs.msg, structvpr_core; print('[setup] ok: torch', torch.__version__, '| cuda', torch.cuda.is_available())"
