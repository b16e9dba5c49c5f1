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
# torch is pinned (in pyproject) to the CPU build; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -e '.[compress,agent,tools,dev,otel]'
# xds-protos ships older copies of opentelemetry-proto's modules under the same paths, and whichever
# package installs last wins. The OTLP exporter (otel extra) needs opentelemetry-proto's own files (a
# superset: Envoy's protos load with them too), so they are put back after everything else.
otel_proto=$(.venv/bin/python -m pip show opentelemetry-proto 2>/dev/null | sed -n 's/^Version: //p')
if [ -n "$otel_proto" ]; then
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$otel_proto"
fi
echo "install.sh: ready (.venv)"
