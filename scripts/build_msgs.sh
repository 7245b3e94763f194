#!/usr/bin/env bash
# Build and install the structvpr_msgs interface package into a Python venv that holds
# the ROS 2 Kilted PyPI wheels (no ROS install, no colcon), see docs PLATFORM notes.
#
#   scripts/build_msgs.sh [VENV_DIR]      (default: <repo>/.venv)
#
# Idempotent: skips the build when the installed interface is newer than its sources
# and still imports. After it, `import structvpr_msgs.msg` works in the venv's python
# with no environment variables: the Python package lands in the venv's site-packages
# and the C libraries in $VENV/lib, which the wheels' bootstrap .pth puts on
# LD_LIBRARY_PATH. On a real ROS 2 workspace, build structvpr_msgs with colcon instead.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$REPO_ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
PKG_SRC="$REPO_ROOT/structvpr_msgs"
BUILD_DIR="$REPO_ROOT/build/structvpr_msgs"
# Written after a successful install; its mtime is "when the installed messages were built".
STAMP="$VENV/share/structvpr_msgs/.structvpr_build_stamp"

if [[ ! -x "$PY" ]]; then
  echo "build_msgs: $PY not found: create the venv first (scripts/setup.sh)" >&2
  exit 2
fi
for tool in cmake c++ make; do
  if ! command -v "$tool" >/dev/null; then
    echo "build_msgs: '$tool' not found: install cmake and a C/C++ compiler (apt-get install cmake g++)" >&2
    exit 2
  fi
done

start_ms=$(date +%s%3N)
elapsed() { local ms=$(( $(date +%s%3N) - start_ms )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# Importing the Python classes alone does not load the C type support; force it, since
# publishing needs it.
IMPORT_CHECK='from structvpr_msgs.msg import LoopCandidate, LoopClosure
for t in (LoopCandidate, LoopClosure):
    t.__class__.__import_type_support__()'
imports_ok() { "$PY" -c "$IMPORT_CHECK" >/dev/null 2>&1; }

# --- environment as PLATFORM.md describes ---------------------------------------------
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
# The wheels' bootstrap hook re-executes python with LD_LIBRARY_PATH set; read it from there
# so the code generators cmake runs can load the ROS C libraries.
LD_LIBRARY_PATH="$("$PY" -c 'import os; print(os.environ.get("LD_LIBRARY_PATH", ""))')"
export LD_LIBRARY_PATH

# --- fix the wheels' exported CMake targets ------------------------------------------
# The *__rosidl_generator_pyExport.cmake files name the include dirs of the interpreter
# that built the wheels (/opt/python/cp311-cp311/...). Point them at this interpreter.
# Only files that still name /opt/python are touched, so a second run changes nothing. Done
# before the up-to-date check: a colcon workspace on this venv (README) needs the same fix,
# also after pip has reinstalled a wheel.
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NUMPY_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
if [[ ! -f "$PY_INCLUDE/Python.h" ]]; then
  echo "build_msgs: Python.h not found in $PY_INCLUDE: install the Python development headers" >&2
  exit 2
fi
mapfile -t builder_files < <(grep -rlE '/opt/python/[^/"; ]+/' --include='*.cmake' "$VENV/share" || true)
for f in "${builder_files[@]}"; do
  sed -i -E \
    -e "s#/opt/python/[^/\"; ]+/lib/python3\.[0-9]+t?/site-packages/numpy/_core/include#${NUMPY_INCLUDE}#g" \
    -e "s#/opt/python/[^/\"; ]+/include/python3\.[0-9]+t?#${PY_INCLUDE}#g" \
    "$f"
done
echo "build_msgs: rewrote builder include paths in ${#builder_files[@]} exported cmake file(s)"

# --- skip when up to date -------------------------------------------------------------
if [[ -f "$STAMP" ]]; then
  newer_sources=$(find "$PKG_SRC" -type f -newer "$STAMP" | head -n 1)
  if [[ -z "$newer_sources" ]] && imports_ok; then
    echo "build_msgs: structvpr_msgs is up to date in $VENV (checked in $(elapsed) s)"
    exit 0
  fi
fi

# --- configure, build, install --------------------------------------------------------
mkdir -p "$BUILD_DIR"
cmake -S "$PKG_SRC" -B "$BUILD_DIR" \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=Release >"$BUILD_DIR.configure.log" 2>&1 || {
  cat "$BUILD_DIR.configure.log" >&2
  echo "build_msgs: cmake configure failed (log: $BUILD_DIR.configure.log)" >&2
  exit 1
}
echo "build_msgs: configured ($(elapsed) s)"
cmake --build "$BUILD_DIR" -j "${STRUCTVPR_BUILD_JOBS:-2}" >"$BUILD_DIR.build.log" 2>&1 || {
  tail -n 60 "$BUILD_DIR.build.log" >&2
  echo "build_msgs: build failed (log: $BUILD_DIR.build.log)" >&2
  exit 1
}
echo "build_msgs: built ($(elapsed) s)"
cmake --install "$BUILD_DIR" >"$BUILD_DIR.install.log" 2>&1 || {
  tail -n 30 "$BUILD_DIR.install.log" >&2
  echo "build_msgs: install failed (log: $BUILD_DIR.install.log)" >&2
  exit 1
}

if ! "$PY" -c "$IMPORT_CHECK"; then
  echo "build_msgs: installed, but 'import structvpr_msgs.msg' fails in $PY" >&2
  exit 1
fi
touch "$STAMP"
echo "build_msgs: structvpr_msgs installed into $VENV in $(elapsed) s"
