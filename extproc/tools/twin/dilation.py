"""Time dilation of a scenario: the same grid with every GPU k times slower, so that the live stack (real
Envoy, `aigrid serve`, Redis, agents, simulated sites) reaches the grid's knee at a few requests per
second on a small host. PURE.

What dilates is the modelled world, on both sides alike:
  * each engine step takes k x its modelled time (`Scenario.dilation`: the twin builds its hardware with
    speed factor 1/k; the live sites run `aigrid sim --time-dilation k`);
  * the links: each site's RTT and one-way link delay x k (the twin's half round trip, the simulated
    site's link sleep, and the RTT the gateway is told);
  * what the gateway is told about the GPUs: `prefill_tokens_per_s` / k (and the roofline speeds the
    twin's adapter derives, from the dilated hardware);
  * the clients: SLOs x k, chat think time x k, the sweep's rates / k and its windows x k (the same
    number of requests per run).

What does not dilate is what really runs at wall speed in the live stack: Envoy, the gateway's CPU (its
routing decisions, the compressor's coarse step, `compression.deadline_ms`), Redis's delay, the agents'
report interval and the gateway replicas' in-flight exchange. The twin keeps those at their wall-clock
figures too (it charges the compressor's CPU as measured and models Envoy as free), so a dilated twin's
figures are compared with the live ones as they are, in wall time, with no rescaling; the parts that do
not dilate weigh k times less against the GPU than at k = 1, and the calibration shows what is left of
them (`docs/evaluation.md`).
"""

from __future__ import annotations

from extproc.tools.twin.scenario import Scenario


def dilated(sc: Scenario, k: float) -> Scenario:
    """`sc` with its modelled world k times slower (see the module docstring); k = 1 gives `sc` back."""
    if not 1.0 <= k <= 1000.0:
        raise ValueError(f"time dilation must be in [1, 1000], got {k:g}")
    if k == 1.0 and sc.dilation == 1.0:
        return sc
    if sc.dilation != 1.0:
        raise ValueError(f"scenario {sc.name!r} is already dilated ({sc.dilation:g}x)")
    sites = [
        s.model_copy(update={
            "rtt_ms": s.rtt_ms * k,
            "link_delay_ms": None if s.link_delay_ms is None else s.link_delay_ms * k,
            "prefill_tokens_per_s": None if s.prefill_tokens_per_s is None else s.prefill_tokens_per_s / k,
        })
        for s in sc.sites
    ]
    slo = {c: v.model_copy(update={"ttft_ms": v.ttft_ms * k, "tpot_ms": None if v.tpot_ms is None else v.tpot_ms * k})
           for c, v in sc.slo.items()}
    w = sc.workload
    chat = w.chat.model_copy(update={"think_time_s": w.chat.think_time_s * k})
    sw = sc.sweep
    sweep = sw.model_copy(update={
        "rates": [r / k for r in sw.rates], "duration_s": sw.duration_s * k, "warmup_s": sw.warmup_s * k,
        "drain_s": sw.drain_s * k, "max_duration_s": sw.max_duration_s * k,
    })
    data = sc.model_dump()
    data.update(sites=[s.model_dump() for s in sites], slo={c: v.model_dump() for c, v in slo.items()},
                workload=w.model_copy(update={"chat": chat}).model_dump(), sweep=sweep.model_dump(), dilation=k)
    # Validated again: a dilated window past a bound (e.g. a sweep longer than an hour) is a clear error.
    return Scenario.model_validate(data)
