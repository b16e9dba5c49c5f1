"""Scale study in the twin: M gateways sharing one map; N sites with mixed RTT.

* herding: at a fixed offered load (70% of the one-gateway goodput), the worst site's pressure as the
  map reports it (peak, and the 95th percentile over time of the worst site's): gateways that each count
  only their own in-flight requests all see the same idle site between two reports and all send to it.
  The gateway sweep runs twice, with the replicas' in-flight exchange (`in_flight_publish_ms`) and
  without it;
* goodput (one seed, a short sweep scaled to the grid's size; `capped` when even the top rate passed);
* decision cost: CPU microseconds per route() call, measured around the real Gateway (process CPU time;
  the only figure here that is not deterministic).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from extproc.tools.sites import GridSite
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.metrics import goodput_search, percentile, summarize
from extproc.tools.twin.scenario import Scenario, Sweep
from extproc.wire.sites import SiteRole

# edge / regional / far: (role, gpu, replicas, rtt_ms, running_capacity)
TIERS = ((SiteRole.edge, "L40S", 1, 2.0, 8), (SiteRole.regional, "H100", 2, 12.0, 48), (SiteRole.far, "H100", 4, 40.0, 96))
PER_REPLICA_RATES = (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0)


def sites_mixed(n: int) -> list[GridSite]:
    out = []
    for i in range(n):
        role, gpu, reps, rtt, cap = TIERS[i % 3]
        out.append(GridSite(name=f"{role.value}{i}", role=role, gpu=gpu, replicas=reps, rtt_ms=rtt + (i // 3) % 5,
                            running_capacity=cap))
    return out


def _replicas(sites: list[GridSite]) -> int:
    return sum(s.replicas for s in sites)


def scenario_for(base: Scenario, sites: list[GridSite], gateways: int, per_replica_rates: list[float],
                 duration_s: float, publish_ms: float | None = None) -> Scenario:
    reps = _replicas(sites)
    rates = [round(r * reps, 2) for r in per_replica_rates]
    upd: dict[str, Any] = {
        "sites": sites, "gateways": gateways,
        "sweep": Sweep(rates=rates, bisect_steps=2, seeds=[1], duration_s=duration_s,
                       warmup_s=min(2.0, duration_s / 4), drain_s=15),
    }
    if publish_ms is not None:
        upd["in_flight_publish_ms"] = publish_ms
    return base.model_copy(update=upd)


def _goodput(sc: Scenario, arm: str) -> tuple[float, bool]:
    memo: dict[float, dict[str, Any]] = {}

    def passes(r: float) -> bool:
        if r not in memo:
            memo[r] = summarize(sc, run_grid(sc, ARMS[arm], r, 1), r)
        return bool(memo[r]["passed"])

    return goodput_search(passes, sc.sweep.rates, sc.sweep.bisect_steps)


def _herding(sc: Scenario, arm: str, rate: float) -> tuple[float, float, float]:
    """(worst site's peak pressure as reported, p95 over time of the worst site's pressure, route() CPU
    µs) at this rate."""
    res = run_grid(sc, ARMS[arm], rate, 1, trace=True)
    peak = max((p for _, _, p in res.timeline if p is not None), default=0.0)
    worst: dict[float, float] = {}
    for t, _, p in res.timeline:
        if p is not None:
            worst[t] = max(worst.get(t, 0.0), p)
    p95 = percentile(list(worst.values()), 95) or 0.0
    us = 1e6 * res.decision_seconds / res.decisions if res.decisions else 0.0
    return peak, p95, us


def _row(task: tuple[Any, ...]) -> dict[str, Any]:
    """One point of the study (runs in a worker process)."""
    kind, base, arm, n_sites, gateways, pub, rates, duration, herd_rate = task
    sites = sites_mixed(n_sites)
    sc = scenario_for(base, sites, gateways, rates, duration, pub)
    t0 = time.process_time()
    g, capped = _goodput(sc, arm)
    rate = herd_rate if herd_rate is not None else max(0.7 * g, sc.sweep.rates[0])
    peak, p95, us = _herding(sc, arm, rate)
    reps = _replicas(sites)
    return {"kind": kind, "arm": arm, "sites": n_sites, "replicas": reps, "gateways": gateways,
            "in_flight_publish_ms": sc.in_flight_publish_ms, "goodput": g, "capped": capped,
            "goodput_per_replica": g / reps, "herding_rate": rate, "worst_site_overload": peak,
            "worst_site_p95_pressure": p95, "decision_us": us, "cpu_seconds": time.process_time() - t0}


def run_scale(base: Scenario, arm: str = "R", gateways: tuple[int, ...] = (1, 4, 16, 64),
              site_counts: tuple[int, ...] = (3, 10, 50), gateway_sites: int = 10,
              per_replica_rates: tuple[float, ...] = PER_REPLICA_RATES, duration_s: float = 8.0,
              progress: Callable[[str], None] | None = None, compare_without_exchange: bool = True,
              workers: int = 1) -> dict[str, Any]:
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    rates = list(per_replica_rates)
    pub = base.in_flight_publish_ms
    # The herding load: 70% of the one-gateway goodput on the gateway sweep's grid.
    first = _row(("gateways", base, arm, gateway_sites, 1, pub, rates, duration_s, None))
    herd = first["herding_rate"]
    tasks = [("gateways", base, arm, gateway_sites, m, pub, rates, duration_s, herd) for m in gateways if m != 1]
    if compare_without_exchange and pub > 0:
        tasks += [("gateways_without_exchange", base, arm, gateway_sites, m, 0.0, rates, duration_s, herd) for m in gateways]
    tasks += [("sites", base, arm, n, 1, pub, rates, duration_s, None) for n in site_counts if n != gateway_sites]
    rows = [first]
    if workers > 1:

        with mp.get_context("fork").Pool(workers) as pool:
            for r in pool.imap_unordered(_row, tasks):
                rows.append(r)
                if progress:
                    progress(_say(r))
    else:
        for t in tasks:
            rows.append(_row(t))
            if progress:
                progress(_say(rows[-1]))
    key = lambda r: (r["gateways"], r["sites"])  # noqa: E731
    out: dict[str, Any] = {
        "arm": arm, "gateway_sites": gateway_sites, "in_flight_publish_ms": pub, "per_replica_rates": rates,
        "duration_s": duration_s,
        "gateways": sorted([r for r in rows if r["kind"] == "gateways"], key=key),
        "gateways_without_exchange": sorted([r for r in rows if r["kind"] == "gateways_without_exchange"], key=key),
        # The one-gateway row of the gateway sweep is also the sites sweep's point at gateway_sites.
        "sites": sorted([r for r in rows if r["kind"] == "sites"] + ([first] if gateway_sites in site_counts else []),
                        key=lambda r: r["sites"]),
    }
    out["wall_seconds"] = time.perf_counter() - t0
    out["cpu_seconds_main"] = time.process_time() - cpu0
    out["cpu_seconds_all"] = sum(r["cpu_seconds"] for r in rows)
    return out


def _say(r: dict[str, Any]) -> str:
    cap = " (top of the sweep: a lower bound)" if r["capped"] else ""
    return (f"scale: {r['gateways']} gateways x {r['sites']} sites ({r['replicas']} replicas, in-flight exchange "
            f"{r['in_flight_publish_ms']:g} ms): goodput {r['goodput']:.1f} req/s{cap}; worst site pressure peak "
            f"{r['worst_site_overload']:.2f}, p95 {r['worst_site_p95_pressure']:.2f} at {r['herding_rate']:.1f} req/s; "
            f"{r['decision_us']:.1f} µs CPU per decision")
