#!/usr/bin/env bash
# Install what build-assets and its tests need on a fresh Debian machine (run as root).
# Idempotent: apt is skipped when every binary is already there; pip install is a no-op when
# nothing changed. Quiet on success; on failure prints the failing step's output and exits 1.
#
#   scripts/setup.sh            # from anywhere; installs the repo this script lives in
#   PYTHON=/path/to/python scripts/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

step() {  # step "what" cmd args...: run quietly, show the output only if it fails
  local what="$1"; shift
  if ! "$@" >"$LOG" 2>&1; then
    echo "setup: $what failed:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root (or install sudo)" >&2; exit 1; }
  SUDO="sudo"
fi

# binary -> Debian package
declare -A PKG=(
  [dockerd]=docker.io
  [docker]=docker.io
  [docker-registry]=docker-registry
  [git]=git
  [chromium]=chromium
  [tmux]=tmux
)
missing=()
for bin in "${!PKG[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${PKG[$bin]}")
done
# PostgreSQL's server binaries are not on PATH (Debian keeps them in /usr/lib/postgresql/N/bin)
pg_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
pg_initdb || missing+=(postgresql)
if [ -z "$PYTHON" ] || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  missing+=(python3 python3-pip python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
  echo "setup: apt-get install ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  step "apt-get update" $SUDO apt-get update -q
  step "apt-get install" $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  PYTHON="${PYTHON:-$(command -v python3)}"
fi

# Debian's own python refuses system-wide pip installs (PEP 668) unless told otherwise.
pip_flags=(-q --disable-pip-version-check)
if "$PYTHON" - <<'EOF'
import sys, sysconfig, pathlib
in_venv = sys.prefix != sys.base_prefix
marker = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if marker.exists() and not in_venv else 1)
EOF
then
  pip_flags+=(--break-system-packages)
fi
echo "setup: pip install -e '$ROOT[test]' ($PYTHON)" >&2
step "pip install" "$PYTHON" -m pip install "${pip_flags[@]}" -e "$ROOT[test]"

for bin in dockerd docker docker-registry git chromium tmux; do
  command -v "$bin" >/dev/null || { echo "setup: $bin still missing after install" >&2; exit 1; }
done
pg_initdb || { echo "setup: initdb still missing after install (postgresql)" >&2; exit 1; }
echo "setup: ok" >&2
