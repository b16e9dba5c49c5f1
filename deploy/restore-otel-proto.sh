#!/bin/sh
# Run after every pip install of the gateway (deploy/install.sh and deploy/Dockerfile both do):
#   deploy/restore-otel-proto.sh PYTHON
# xds-protos ships older copies of opentelemetry-proto's modules under the same paths, and whichever
# package installs last wins. The OTLP exporter (otel extra) needs opentelemetry-proto's own files (a
# superset: Envoy's protos load with them too), so they are put back. Without the otel extra there is
# no opentelemetry-proto and nothing to do.
set -eu
PY=${1:?usage: restore-otel-proto.sh PYTHON}
otel_proto=$("$PY" -m pip show opentelemetry-proto 2>/dev/null | sed -n 's/^Version: //p')
if [ -n "$otel_proto" ]; then
  "$PY" -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$otel_proto"
fi
