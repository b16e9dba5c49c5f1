"""Twin against the live path at saturation, on a time-dilated grid (`dilation.py`).

The live side is the whole stack on this host (`extproc/tools/stack/local.py`): real Envoy, `aigrid
serve` configured exactly as the twin configures its gateway for the arm (`gateway_adapter.config_dict`
of the dilated scenario: routing profile, SLOs, per-site speeds, compression settings), Redis, the agents,
and `aigrid sim` sites running every engine step k x slower than modelled. The twin runs the same planned
requests (and two more seeds beside them, for its own spread). Both sides are measured over the requests
planned in [warm-up, duration), by one rule (`live.figures`): a request that has not finished `drain_s`
after the last arrival misses on both sides.

A live run in which a simulated site fell behind wall time (its own lateness check, `GET /sim/timing`) is
marked `live_valid: false`: its figures describe the host's CPU, not the modelled GPUs.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from extproc.tools.loadtest.runner import Endpoints, run_loadtest
from extproc.tools.loadtest.workloads import REQUEST_ID_HEADER, LoadSpec
from extproc.tools.stack.demo_wait import wait_ready_and_idle
from extproc.tools.stack.local import LocalStack
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.gateway_adapter import config_dict
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.live import (
    compare_side,
    figures,
    live_outcomes,
    live_retention,
    planned_requests,
    twin_outcomes,
)
from extproc.tools.twin.scenario import Scenario
from extproc.tools.workload.generate import generate_open_loop
from extproc.tools.workload.rag import build_corpus

# Keys of a twin `sites[]` entry that the local stack writes itself (name, endpoints on its own ports).
_STACK_SITE_KEYS = frozenset({"name", "endpoints"})


def live_stack(dsc: Scenario, arm_key: str, workdir: Any, envoy_port: int = 10000, admin_port: int = 9901) -> LocalStack:
    """A local grid whose gateway is configured as the twin's gateway for this arm, on the dilated sites."""
    cfg, _ = config_dict(dsc, ARMS[arm_key])
    site_extra = {s["name"]: {k: v for k, v in s.items() if k not in _STACK_SITE_KEYS} for s in cfg["sites"]}
    gw = {k: v for k, v in cfg["gateway"].items() if k not in ("listen", "metrics_listen")}
    overrides = {"routing": cfg["routing"], "slo": cfg["slo"], "gateway": gw}
    return LocalStack(workdir, sites=tuple(dsc.sites), envoy_port=envoy_port, admin_port=admin_port, upstream="sim",
                      policy=cfg["policy"], compression=cfg.get("compression", {}), overrides=overrides, site_extra=site_extra,
                      time_dilation=dsc.dilation, agent_interval_ms=int(dsc.report_interval_ms))


def _site_urls(stack: LocalStack) -> dict[str, str]:
    return {s.name: f"http://127.0.0.1:{stack.site_ports[s.name]}" for s in stack.sites}


def _http(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
        body = r.read()
    return json.loads(body) if method == "GET" else None


def sim_timing(site_urls: dict[str, str], reset: bool = False) -> dict[str, Any]:
    """Each simulated site's timing verdict (GET /sim/timing), or why it could not be read."""
    out: dict[str, Any] = {}
    for name, base in site_urls.items():
        try:
            t = _http(base + "/sim/timing" + ("?reset=1" if reset else ""))
            out[name] = {"valid": t["valid"], "reason": t["reason"], "lateness_p99_ms": round(1000 * t["lateness_p99_s"], 2),
                         "slip_seconds": t["slip_seconds"]}
        except (OSError, ValueError, KeyError) as exc:
            out[name] = {"valid": False, "reason": f"no timing verdict: {exc}"}
    return out


def _cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU seconds (user + system) each of the stack's processes has used so far (/proc; Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p in stack.group.procs:
        if p.proc is None or p.proc.poll() is not None:
            continue
        try:
            fields = Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime are fields 14-17 of stat (1-based); here after the name.
            out[p.name] = sum(int(x) for x in fields[11:15]) / tick
        except (OSError, ValueError, IndexError):
            continue
    return out


def point_scenario(dsc: Scenario, seconds: float, warmup_s: float, drain_s: float) -> Scenario:
    sw = dsc.sweep.model_copy(update={"duration_s": seconds, "warmup_s": warmup_s, "drain_s": drain_s})
    return dsc.model_copy(update={"sweep": sw})


def twin_point(dsc: Scenario, arm_key: str, rate: float, seconds: float, warmup_s: float, drain_s: float,
               seeds: tuple[int, ...]) -> tuple[dict[str, Any], list[Any]]:
    """The twin alone at one rate: its figures per seed, and the first seed's flights."""
    psc = point_scenario(dsc, seconds, warmup_s, drain_s)
    out = {}
    first: list[Any] = []
    for seed in seeds:
        reqs = generate_open_loop(dsc.workload, rate, seconds, seed)
        res = run_grid(psc, ARMS[arm_key], rate, seed, requests=reqs)
        out[str(seed)] = figures(*twin_outcomes(res.flights, warmup_s, seconds), seconds - warmup_s, psc.slo)
        first = first or res.flights
    return out, first


def live_point(stack: LocalStack, dsc: Scenario, arm_key: str, rate: float, seconds: float, warmup_s: float,
               drain_s: float, seed: int = 1, twin_seeds: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """One rate, live and in the twin, on the same planned requests (`seed`); the twin also at the other
    `twin_seeds`. The stack must be running with `live_stack(dsc, arm_key)`'s configuration."""
    model = dsc.sites[0].model
    reqs = generate_open_loop(dsc.workload, rate, seconds, seed)
    wait_ready_and_idle(stack)
    urls = _site_urls(stack)
    for base in urls.values():
        _http(base + "/_aigrid/records", "DELETE")
    sim_timing(urls, reset=True)
    endpoints = Endpoints(url=stack.url, admin=f"http://127.0.0.1:{stack.admin_port}",
                          gateway_metrics=[f"http://127.0.0.1:{stack.metrics_port}/metrics"],
                          site_metrics={n: u + "/metrics" for n, u in urls.items()})
    spec = LoadSpec(rate=rate, duration_s=seconds, request_timeout_s=drain_s, model=model)
    cpu0 = _cpu_seconds(stack)
    res = asyncio.run(run_loadtest(spec, endpoints, name=f"live-{arm_key}-{rate:g}", progress=False,
                                   planned_requests=planned_requests(dsc.workload, reqs, model)))
    timing = sim_timing(urls)
    cpu1 = _cpu_seconds(stack)
    sent = max(1, len(res.records))
    # CPU per request of what the twin does not run as modelled parts: Envoy and the gateway (the sites'
    # and agents' beside them), measured over the point, in ms per request sent.
    cpu_ms = {n: round(1000 * (cpu1[n] - cpu0.get(n, 0.0)) / sent, 2) for n in cpu1}
    records: list[dict[str, Any]] = []
    for base in urls.values():
        records += _http(base + "/_aigrid/records") or []
    kept = live_retention(records, reqs, build_corpus(dsc.workload.rag))
    live = figures(*live_outcomes(res.records, reqs, warmup_s, seconds, kept), seconds - warmup_s, dsc.slo)
    live["errors"] = sum(1 for x in res.records if not x.get("ok"))
    errs = [x for x in res.records if not x.get("ok")]
    live["error_kinds"] = {k: sum(1 for x in errs if x.get("error_kind") == k) for k in sorted({str(x.get("error_kind")) for x in errs})}
    live["error_samples"] = [f"{x.get('status')} {x.get('error_kind')}: {str(x.get('error'))[:160]}" for x in errs[:3]]
    twins, flights = twin_point(dsc, arm_key, rate, seconds, warmup_s, drain_s, tuple(dict.fromkeys((seed, *twin_seeds))))
    twin = twins[str(seed)]
    # Request by request, for the note on what differs: (id, kind, class, site live / twin, TTFT ms live / twin).
    by_id = {f"tw-{f.req.rid}": f for f in flights}
    live_site = {r.get("headers", {}).get(REQUEST_ID_HEADER): r.get("site") for r in records}
    pairs = []
    for x in res.records:
        f = by_id.get(x["id"])
        if f is None or not warmup_s <= f.req.at < seconds:
            continue
        pairs.append([x["id"], f.req.kind, f.req.sla, f.req.prompt_tokens, live_site.get(x["id"]), f.site,
                      None if x.get("ttft_s") is None else round(1000 * x["ttft_s"], 1),
                      None if f.first is None else round(1000 * (f.first - f.sent), 1)])
    for side, col in (("live", 4), ("twin", 5)):
        sites = [q[col] for q in pairs]
        (live if side == "live" else twin)["site_share"] = {n: round(sites.count(n) / len(sites), 3) for n in sorted(set(map(str, sites)))} if sites else {}
    return {"arm": arm_key, "rate": round(rate, 4), "requests": live["requests"], "live": live, "twin": twin,
            "twin_seeds": {k: _short(v) for k, v in twins.items()}, **compare_side(live, twin),
            "live_valid": all(t.get("valid", False) for t in timing.values()), "sim_timing": timing,
            "cpu_ms_per_request": cpu_ms, "pairs": pairs}


def _short(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f[k] for k in ("requests", "requests_per_s", "ttft_p50_ms", "ttft_p95_ms", "tpot_p95_ms", "attainment")}


def seconds_for(rate: float, requests: int, warmup_s: float, workload: Any = None, seed: int = 1) -> float:
    """Arrival window that plans at least `requests` measured requests at `rate` (after the warm-up): with
    the workload, the planned requests are counted (a conversation's later turns can fall past the window)."""
    secs = warmup_s + requests / rate
    if workload is None:
        return secs
    for _ in range(40):
        n = sum(1 for r in generate_open_loop(workload, rate, secs, seed) if warmup_s <= r.at < secs)
        if n >= requests:
            break
        secs *= 1.05
    return secs
