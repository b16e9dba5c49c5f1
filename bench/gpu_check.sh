#!/usr/bin/env bash
# GPU host check for the load agent's NVML adapter: one reading through `aigrid agent --once`, printed as
# the report JSON next to nvidia-smi's own view, and a pass/fail line. Exits non-zero when NVML yields no
# GPU. Extra arguments go to the agent (e.g. --vllm-url http://127.0.0.1:8000 --dcgm-url http://127.0.0.1:9400).
# Publishes nothing (--dry-run); add --redis-url URL and drop --dry-run below to publish too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu \
  --format=csv 2>/dev/null || echo "(nvidia-smi not available)"

echo "== aigrid agent --once (NVML)"
out=$("$PY" -m extproc.cli agent --site gpucheck --node "$(hostname -s | tr -c 'A-Za-z0-9_.\n-' '-')" \
  --nvml --once --dry-run "$@" 2>&1) || { echo "$out"; echo "FAIL: agent exited non-zero"; exit 1; }
echo "$out"

printf '%s' "$out" | "$PY" -c '
import json, sys
text = sys.stdin.read()
report = json.loads(text[text.index("{"): text.rindex("}") + 1])
gpus = report.get("gpus", [])
for g in gpus:
    print("gpu %s %s util=%s mem=%s/%s power=%sW temp=%sC" % (
        g.get("index", 0), g.get("name"), g.get("utilization"), g.get("memory_used_bytes"),
        g.get("memory_total_bytes"), g.get("power_watts"), g.get("temperature_c")))
ok = bool(gpus) and all("utilization" in g and "memory_total_bytes" in g for g in gpus)
print(("PASS" if ok else "FAIL") + ": NVML gave %d GPU(s)" % len(gpus))
sys.exit(0 if ok else 1)
'
