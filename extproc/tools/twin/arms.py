"""The evaluation's arms: a routing profile plus compression on or off. Plain data; the adapter
(`gateway_adapter.py`) turns an arm into a gateway configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Arm:
    key: str
    title: str
    # Routing profile (routing.profile in aigrid.yaml): a built-in one (routing/profiles.py) or one of the
    # adapter's extra ones (spill_no_sla_no_affinity).
    profile: str
    compress: bool = False
    # Compression at a fixed keep-rate whatever the load (ablation of the load-driven rate).
    fixed_rate: float | None = None
    # The gateway sees every replica as its own endpoint (GIE scores pods, not pools of pods): each site
    # of the scenario is split into one site per replica, same GPU, same link.
    per_replica: bool = False
    # How often the router sees fresh engine metrics, ms; None: the scenario's agent report interval.
    # GIE's EPP scrapes every pod itself every 50 ms (refresh-metrics-interval), faster than our agents.
    report_interval_ms: float | None = None


ARMS: dict[str, Arm] = {a.key: a for a in (
    Arm("B0", "round robin (plain Envoy load balancing, no ext_proc)", "round_robin"),
    Arm("B1", "least loaded", "least_loaded"),
    Arm("B2", "GIE defaults per pod: queue 2 + KV 2 + prefix 3, random ties", "prefix_least_loaded", per_replica=True,
        report_interval_ms=50),
    Arm("R", "AI Grid cost-model routing, no compression", "aigrid"),
    Arm("C", "least loaded + load-driven compression", "least_loaded", compress=True),
    Arm("R+C", "AI Grid gateway: cost-model routing + load-driven compression", "aigrid", compress=True),
    Arm("R+C-noSLA", "R+C without SLA classes", "aigrid_no_sla", compress=True),
    Arm("R+C-fixed", "R+C with a fixed keep-rate 0.5", "aigrid", compress=True, fixed_rate=0.5),
    # The waterfall's steps: B1 -> cost model without classes -> + SLA classes -> + realtime reserve (= R)
    # -> + compression (= R+C); and the prefix index's share, as an ablation of R.
    Arm("R-base", "cost model, every request judged by the standard SLO, no reserve", "aigrid_no_sla"),
    Arm("R-noRes", "cost model with SLA classes, no realtime reserve", "aigrid_no_reserve"),
    Arm("R-noPrefix", "R without the prefix index (every prompt predicted uncached)", "aigrid_no_prefix"),
    Arm("R-noHold", "R without holding batch work back while realtime TPOT is tight everywhere", "aigrid_no_hold"),
    # The earlier policy (affinity, realtime to the closest site with headroom, spill with hysteresis).
    Arm("S", "spill routing (the earlier aigrid profile)", "spill"),
    Arm("S+C", "spill routing + load-driven compression", "spill", compress=True),
    # Not an arm of the issue: the framework's transport-aware profile (estimated TTFT against the class's
    # budget), with and without compression, to see what a policy that knows GPU speed would reach.
    Arm("T", "transport-aware (estimated TTFT vs SLO budget)", "transport_aware"),
    Arm("T+C", "transport-aware + load-driven compression", "transport_aware", compress=True),
)}

MAIN_ARMS: tuple[str, ...] = ("B1", "B2", "R", "C", "R+C")
WATERFALL: tuple[tuple[str, str], ...] = (
    ("B1", "B1 least loaded"), ("R-base", "+ cost model"), ("R-noRes", "+ SLA classes"),
    ("R", "+ realtime reserve"), ("R+C", "+ compression"),
)
