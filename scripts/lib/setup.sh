# Sourced by scripts/test and scripts/demo: finds the build JDK and prepares .venv with kvtier.
# Idempotent; a fresh clone needs only python3 (with venv), bash and network access to Maven
# Central and PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

JAVA_HOME="$(scripts/jdk-home)"
export JAVA_HOME
echo "kvtier: building with JDK at $JAVA_HOME"

PYTHON="${KVTIER_PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"

# Installs the kvtier wheel (its build runs the Maven build of java-core) and the test tools.
install_kvtier() {
  "$VENV_PY" -m pip install -q --upgrade "pip>=24"
  "$VENV_PY" -m pip install -q "pytest>=8" "ruff>=0.6" "mmh3>=4"
  # ptxas of CUDA 12.0 (no GPU needed): the tests assemble the shipped PTX with the oldest
  # CUDA 12 toolchain, for sm_70, sm_80 and sm_90.
  "$VENV_PY" -m pip install -q "nvidia-cuda-nvcc-cu12==12.0.76"
  # One build of the wheel serves this venv and the GPU bundle (scripts/gpu-bundle).
  rm -rf "$ROOT/.whl"
  "$VENV_PY" -m pip wheel -q --no-deps -w "$ROOT/.whl" "$ROOT/python-connector"
  "$VENV_PY" -m pip install -q "$ROOT"/.whl/kvtier-*.whl # with its dependencies
  "$VENV_PY" -m pip install -q --force-reinstall --no-deps "$ROOT"/.whl/kvtier-*.whl # this build
}

# Runs "$@" (a command or a function of these scripts) and, while it runs, prints a line every
# 15 s saying it still does, so a step of minutes is not silent. Returns the command's status.
with_progress() {
  local what="$1" start=$SECONDS
  shift
  echo "kvtier: $what..."
  "$@" &
  local pid=$!
  while ! wait_for_exit "$pid" 15; do
    echo "kvtier:   still $what ($((SECONDS - start)) s)"
  done
  wait "$pid"
}

# True once process $1 has exited, false when it still runs after $2 seconds.
wait_for_exit() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}
