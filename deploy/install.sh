#!/usr/bin/env bash
# Fresh-machine install: redis-server (Debian) if missing, then a virtualenv in .venv with the gateway,
# its compressor model stack and the test tools. Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real: redis-server, and prometheus (+ promtool) for the metrics test.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
  else
    echo "install.sh: missing Debian packages:$missing; run 'sudo apt-get install$missing' and retry" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The image's extras (deploy/Dockerfile's EXTRAS, kept equal by tests/house/test_release.py) plus dev.
# torch is pinned (in pyproject) to the CPU build; an unpinned torch would pull a multi-GB CUDA build.
EXTRAS=compress,agent,tools,otel
.venv/bin/python -m pip install -q -e ".[$EXTRAS,dev]"
# The same fix-up the image runs: opentelemetry-proto's own files back over xds-protos' older copies.
./deploy/restore-otel-proto.sh .venv/bin/python
echo "install.sh: ready (.venv)"
