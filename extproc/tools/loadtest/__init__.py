"""`aigrid loadtest`: drive OpenAI traffic through Envoy and report what the grid did with it.

Layout (functional core, thin adapters):
* ``workloads`` – the workload spec (YAML, validated) and a pure, seeded request planner.
* ``sse`` – an incremental Server-Sent-Events parser (chunk boundaries never follow event boundaries).
* ``stats`` – pure math: percentiles, Envoy admin stats diffs, Prometheus text parsing, summaries, ratios.
* ``runner`` – the async aiohttp client, Envoy admin and /metrics samplers (the only I/O).
* ``report`` – JSON result file, rich tables and matplotlib charts.
* ``cli`` – ``aigrid loadtest``.

The API the demo uses: ``run_loadtest(spec, endpoints) -> LoadResult`` and
``write_report(results, out_dir, baseline="a") -> ReportPaths``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Re-exports resolved lazily: `aigrid --help` must not pay for matplotlib or aiohttp imports.
_EXPORTS = {
    "Endpoints": "runner", "LoadResult": "runner", "LoadTestError": "runner", "run_loadtest": "runner",
    "ReportPaths": "report", "compare": "report", "render_compare": "report", "render_summary": "report",
    "write_report": "report",
    "LoadSpec": "workloads", "WorkloadError": "workloads", "load_workload_file": "workloads", "parse_spec": "workloads",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"extproc.tools.loadtest.{mod}"), name)
