#!/usr/bin/env bash
# Fresh-machine install: redis-server (Debian) if missing, then a virtualenv in .venv with the gateway,
# its compressor model stack and the test tools. Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null
  else
    echo "install.sh: redis-server is missing; run 'sudo apt-get install redis-server' and retry" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (in pyproject) to the CPU build; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -e '.[compress,dev]'
echo "install.sh: ready (.venv)"
