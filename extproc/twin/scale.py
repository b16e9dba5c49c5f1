"""Scale study in the twin: M gateways sharing one map; N sites with mixed RTT.

* herding: at a fixed offered load (70% of the one-gateway goodput), the worst site's peak pressure as
  the map reports it (running / capacity, waiting / queue_ref, KV): many gateways that each count only
  their own in-flight requests all see the same idle site between two reports and all send to it;
* goodput (one seed, a short sweep scaled to the grid's size);
* decision cost: CPU microseconds per route() call, measured around the real Gateway (process CPU
  time; the only figure here that is not deterministic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from extproc.twin.arms import ARMS
from extproc.twin.grid import run_grid
from extproc.twin.metrics import goodput_search, percentile, summarize
from extproc.twin.scenario import Scenario, SiteSpec, Sweep

# edge / regional / far: (role, gpu, replicas, rtt_ms, running_capacity)
TIERS = (("edge", "L40S", 1, 2.0, 8), ("remote", "H100", 2, 12.0, 48), ("remote", "H100", 4, 40.0, 96))


def sites_mixed(n: int) -> list[SiteSpec]:
    out = []
    for i in range(n):
        role, gpu, reps, rtt, cap = TIERS[i % 3]
        tier = ("edge", "regional", "far")[i % 3]
        out.append(SiteSpec(name=f"{tier}{i}", role=role, gpu=gpu, replicas=reps, rtt_ms=rtt + (i // 3) % 5,
                            running_capacity=cap))
    return out


def _replicas(sites: list[SiteSpec]) -> int:
    return sum(s.replicas for s in sites)


def scenario_for(base: Scenario, sites: list[SiteSpec], gateways: int, per_replica_rates: list[float],
                 duration_s: float) -> Scenario:
    reps = _replicas(sites)
    rates = [round(r * reps, 2) for r in per_replica_rates]
    return base.model_copy(update={
        "sites": sites, "gateways": gateways,
        "sweep": Sweep(rates=rates, bisect_steps=2, seeds=[1], duration_s=duration_s, warmup_s=min(3.0, duration_s / 4), drain_s=15),
    })


def _goodput(sc: Scenario, arm: str) -> tuple[float, dict[float, dict[str, Any]]]:
    memo: dict[float, dict[str, Any]] = {}

    def passes(r: float) -> bool:
        if r not in memo:
            memo[r] = summarize(sc, run_grid(sc, ARMS[arm], r, 1), r)
        return bool(memo[r]["passed"])

    g, _ = goodput_search(passes, sc.sweep.rates, sc.sweep.bisect_steps)
    return g, memo


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


def run_scale(base: Scenario, arm: str = "R", gateways: tuple[int, ...] = (1, 4, 16, 64),
              site_counts: tuple[int, ...] = (3, 10, 50), gateway_sites: int = 10,
              per_replica_rates: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0), duration_s: float = 15.0,
              progress: Callable[[str], None] | None = None, compare_without_exchange: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    out: dict[str, Any] = {"arm": arm, "gateway_sites": gateway_sites, "gateways": [], "sites": [],
                           "in_flight_publish_ms": base.in_flight_publish_ms}
    sites = sites_mixed(gateway_sites)
    ref_rate = None
    # With the replicas' in-flight exchange as configured, and (for comparison) without it.
    variants = [base.in_flight_publish_ms] + ([0.0] if compare_without_exchange and base.in_flight_publish_ms > 0 else [])
    for pub in variants:
        vbase = base.model_copy(update={"in_flight_publish_ms": pub})
        key = "gateways" if pub == base.in_flight_publish_ms else "gateways_without_exchange"
        out.setdefault(key, [])
        for m in gateways:
            sc = scenario_for(vbase, sites, m, list(per_replica_rates), duration_s)
            g, _ = _goodput(sc, arm)
            if ref_rate is None:
                ref_rate = max(0.7 * g, sc.sweep.rates[0])
            peak, p95, us = _herding(sc, arm, ref_rate)
            row = {"gateways": m, "arm": arm, "sites_n": gateway_sites, "goodput": g, "herding_rate": ref_rate,
                   "worst_site_overload": peak, "worst_site_p95_pressure": p95, "decision_us": us, "in_flight_publish_ms": pub}
            out[key].append(row)
            if progress:
                progress(f"scale: {m} gateways x {gateway_sites} sites (in-flight exchange {pub:g} ms): goodput {g:.1f} req/s, "
                         f"worst site peak pressure {peak:.2f} (p95 {p95:.2f}) at {ref_rate:.1f} req/s, {us:.1f} µs/decision")
    for n in site_counts:
        ss = sites_mixed(n)
        sc = scenario_for(base, ss, 1, list(per_replica_rates), duration_s)
        g, _ = _goodput(sc, arm)
        peak, p95, us = _herding(sc, arm, max(0.7 * g, sc.sweep.rates[0]))
        row = {"sites": n, "replicas": _replicas(ss), "goodput": g, "goodput_per_replica": g / _replicas(ss),
               "worst_site_overload": peak, "worst_site_p95_pressure": p95, "decision_us": us}
        out["sites"].append(row)
        if progress:
            progress(f"scale: {n} sites ({_replicas(ss)} replicas): goodput {g:.1f} req/s, worst site peak pressure {peak:.2f}, {us:.1f} µs/decision")
    out["wall_seconds"] = time.perf_counter() - t0
    return out
