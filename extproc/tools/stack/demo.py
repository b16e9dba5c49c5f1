"""`aigrid demo`: goodput at SLO per arm in the grid twin, then a short live confirmation through real
Envoy, ext_proc, Redis and simulated GPU sites.

1. Twin sweep (virtual time, `extproc/tools/twin/`): the reference scenario's main arms x rates x seeds; goodput
   (highest rate at which >= 90% of requests, >= 99% of realtime ones, meet their SLO) with 95% bootstrap
   intervals over the seeds; charts.
2. Live: the local grid (`extproc/tools/stack/local.py`) under the same requests at two rates, and the twin
   under the same requests: requests/s and p95 TTFT side by side (`twin_vs_live`).
Writes `<out>/summary.json`. Every process is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from extproc.tools.loadtest.runner import Endpoints, run_loadtest
from extproc.tools.loadtest.workloads import LoadSpec
from extproc.tools.stack.demo_wait import wait_ready_and_idle
from extproc.tools.stack.local import LocalStack
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.burst import traced_burst
from extproc.tools.twin.experiment import run_experiment
from extproc.tools.twin.gateway_adapter import measure_coarse_speed
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.live import (
    compare_side,
    live_figures,
    planned_requests,
    twin_figures,
)
from extproc.tools.twin.plots import burst, write_charts
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario
from extproc.tools.workload.generate import generate_open_loop
from extproc.tools.workload.rag import build_corpus

MAIN_ARMS = ("B1", "B2", "R", "C", "R+C")
ALL_ARMS = ("B0", "B1", "B2", "R", "C", "R+C", "R+C-noSLA", "R+C-fixed", "R-base", "R-noRes", "R-noPrefix", "S", "S+C",
            "T", "T+C")


def _twin(arms: tuple[str, ...], seeds: int, long: bool, console: Console, duration_s: float | None = None) -> tuple[Any, dict[str, Any]]:
    sc = load_scenario(REFERENCE_SCENARIO)
    dur = duration_s or (40.0 if long else sc.sweep.duration_s)
    sw = sc.sweep.model_copy(update={"seeds": list(range(1, seeds + 1)), "duration_s": dur,
                                     "warmup_s": min(sc.sweep.warmup_s, dur / 4)})
    sc = sc.model_copy(update={"sweep": sw, "arms": list(arms)})

    doc = run_experiment(sc, arms, progress=lambda m: console.print(f"  twin: {m}"), workers=min(2, os.cpu_count() or 1))
    return sc, doc


def _live(stack: LocalStack, sc: Any, rates: tuple[float, ...], seconds: float, console: Console) -> dict[str, Any]:
    warm = min(2.0, seconds / 4)
    lsc = sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"duration_s": seconds, "warmup_s": warm, "drain_s": 30})})
    endpoints = Endpoints(url=stack.url, admin=f"http://127.0.0.1:{stack.admin_port}",
                          gateway_metrics=[f"http://127.0.0.1:{stack.metrics_port}/metrics"],
                          site_metrics={s.name: f"http://127.0.0.1:{stack.site_ports[s.name]}/metrics" for s in stack.sites})
    out: dict[str, Any] = {"arm": "B1", "seconds": seconds, "warmup_s": warm, "rates": {}}
    site_urls = {s.name: f"http://127.0.0.1:{stack.site_ports[s.name]}" for s in stack.sites}
    for rate in rates:
        reqs = generate_open_loop(sc.workload, rate, seconds, 1)
        wait_ready_and_idle(stack)
        sim_timing(site_urls, reset=True)
        spec = LoadSpec(rate=rate, duration_s=seconds + 30, request_timeout_s=60, model="llama-3.1-8b")
        res = asyncio.run(run_loadtest(spec, endpoints, name=f"live-{rate:g}", progress=False,
                                       planned_requests=planned_requests(sc.workload, reqs, "llama-3.1-8b")))
        live = live_figures(res.records, reqs, warm, seconds)
        twin = twin_figures(run_grid(lsc, ARMS["B1"], rate, 1, requests=reqs).flights, warm, seconds)
        cmp_ = compare_side(live, twin)
        # The simulated sites' own verdict: a site that fell behind real time measured the host's CPU.
        timing = sim_timing(site_urls)
        valid = all(t.get("valid", False) for t in timing.values())
        out["rates"][str(rate)] = {"live": live, "twin": twin, **cmp_, "live_valid": valid, "sim_timing": timing}
        if not valid:
            console.print(f"  [yellow]live run at {rate:g} req/s is INVALID (simulator fell behind real time): "
                          + "; ".join(f"{k}: {v.get('reason')}" for k, v in timing.items() if not v.get("valid")))
        console.print(f"  live vs twin at {rate:g} req/s: requests/s {live['requests_per_s']:.2f} vs {twin['requests_per_s']:.2f}; "
                      f"p95 TTFT {live['ttft_p95_ms']} vs {twin['ttft_p95_ms']} ms")
    return out


def burst_trace(sc: Any, arm: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """One traced run of `arm` with bursty arrivals (Gamma, CV 2) at 80% of its goodput: site pressure as
    the gateway saw it, and the keep-rate chosen per RAG request, over time."""

    v = doc["arms"].get(arm, {})
    if "goodput" not in v or v["goodput"]["value"] <= 0:
        return None
    return traced_burst(sc, arm, 0.8 * v["goodput"]["value"])


def sim_timing(site_urls: dict[str, str], reset: bool = False) -> dict[str, Any]:
    """Each simulated site's timing verdict (GET /sim/timing), or why it could not be read."""

    out: dict[str, Any] = {}
    for name, base in site_urls.items():
        try:
            with urllib.request.urlopen(base + "/sim/timing" + ("?reset=1" if reset else ""), timeout=5) as r:  # noqa: S310
                t = json.loads(r.read())
            out[name] = {"valid": t["valid"], "reason": t["reason"], "lateness_p99_ms": round(1000 * t["lateness_p99_s"], 2),
                         "slip_seconds": t["slip_seconds"]}
        except (OSError, ValueError, KeyError) as exc:
            out[name] = {"valid": False, "reason": f"no timing verdict: {exc}"}
    return out


def run_demo(workdir: Path, out_dir: Path, *, envoy_port: int = 10000, admin_port: int = 9901, long: bool = False,
             arms: tuple[str, ...] | None = None, seeds: int = 5, live_rates: tuple[float, ...] = (2.0, 4.0),
             live_seconds: float = 12.0, live: bool = True, twin_duration_s: float | None = None) -> dict[str, Any]:

    console = Console()
    t0 = time.monotonic()
    stack = LocalStack(workdir, envoy_port=envoy_port, admin_port=admin_port, upstream="sim")
    if live:
        stack._check_ports()  # a taken port is a clear error before minutes of twin work
    arms = arms or (ALL_ARMS if long else MAIN_ARMS)
    console.rule("[bold]twin: goodput at SLO per arm (virtual time)")
    sc, doc = _twin(arms, seeds, long, console, twin_duration_s)
    burst_doc = burst_trace(sc, "R+C" if "R+C" in arms else arms[-1], doc)
    measured_speed = measure_coarse_speed(build_corpus(sc.workload.rag))
    summary: dict[str, Any] = {
        "scenario": "extproc/tools/twin/reference.yaml" + (" (--long: 40 s per run)" if long else ""),
        "seeds": seeds,
        "statistic": sc.goodput.statistic,
        "arms": {},
        "compare": doc["compare"],
        "compressor": {"coarse_tokens_per_s_used": sc.compressor.coarse_tokens_per_s,
                       "coarse_tokens_per_s_measured_now": round(measured_speed),
                       "note": "BM25 coarse step, process CPU time over the corpus' items on this machine"},
    }
    for k, v in doc["arms"].items():
        if "goodput" not in v:
            summary["arms"][k] = {"unavailable": v.get("unavailable")}
            continue
        g = v["goodput"]
        top = max(v["curves"], key=float)
        at = max((r for r in v["curves"] if float(r) <= max(g["value"], float(min(v["curves"], key=float)))), key=float)
        c = v["curves"][at]
        summary["arms"][k] = {
            "title": v["title"],
            "goodput": {"value": g["value"], "ci95": g["ci95"], "ci95_over_seeds": g["ci95_over_seeds"],
                        "statistic": g["statistic"], "per_seed": g["per_seed"], "capped_at_top_rate": g["capped_at_top_rate"],
                        "requests_per_class_at_goodput": g["requests_per_class_at_goodput"],
                        "per_seed_rule": v["goodput_per_seed_rule"]["value"]},
            "at_rate": float(at),
            "at_goodput": {key: c[key] for key in ("attainment", "requests_per_s", "output_tokens_per_s", "prompt_tokens_sent",
                                                    "prompt_tokens_to_gpu", "prompt_tokens_processed", "prefix_cache_hit_rate",
                                                    "preemptions", "rewrites", "retention", "retention_of_compressed",
                                                    "compressor_cpu_s_per_request")},
            "class_attainment_at_goodput": {x: c["classes"][x]["attainment"] for x in c["classes"]},
            "top_rate": float(top),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["charts"] = write_charts(doc, out_dir)
    if burst_doc is not None:

        summary["charts"]["burst"] = str(burst(burst_doc, out_dir / "burst.png"))
        summary["burst"] = {k: v for k, v in burst_doc.items() if k not in ("timeline", "keep_rates")}
    (out_dir / "twin.json").write_text(json.dumps(doc, indent=1))
    if live:
        console.rule("[bold]live confirmation through Envoy (B1 arm)")
        with console.status("starting the local grid (Redis, simulated sites, agents, ext_proc, Envoy)..."):
            stack.overrides = {**stack.overrides, "routing": {"profile": "least_loaded"}}
            stack.start()
        try:
            summary["twin_vs_live"] = _live(stack, sc, live_rates, live_seconds, console)
        finally:
            stack.stop()
    else:
        summary["twin_vs_live"] = {"skipped": "--no-live"}
    summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    console.rule("[bold]goodput at SLO (requests/s), pooled Wilson rule, 95% bootstrap interval over requests")
    for k, v in summary["arms"].items():
        if "goodput" in v:
            g = v["goodput"]
            cap = " (top of sweep: a lower bound)" if g["capped_at_top_rate"] else ""
            console.print(f"  {k:9s} {g['value']:7.2f}  [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]{cap}")
        else:
            console.print(f"  {k:9s} not run: {v['unavailable']}")
    for k, v in doc["compare"].items():
        if "/" in k:
            console.print(f"  {k:9s} {v['value']:.2f}x  [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    console.print(f"report: {out_dir / 'summary.json'}")
    console.print(f"demo finished in {summary['wall_seconds']:.0f}s; every process stopped")
    return summary
