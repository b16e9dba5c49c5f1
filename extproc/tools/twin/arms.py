"""The evaluation's arms: a routing profile plus compression on or off. Plain data; the adapter
(`gateway_adapter.py`) turns an arm into a gateway configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Arm:
    key: str
    title: str
    # Routing profile (routing.profile in aigrid.yaml): round_robin, least_loaded, prefix_least_loaded,
    # aigrid, aigrid_no_sla, aigrid_no_affinity, aigrid_no_sla_no_affinity (the last one is aigrid_no_sla
    # with the affinity table off).
    profile: str
    compress: bool = False
    # Compression at a fixed keep-rate whatever the load (ablation of the load-driven rate).
    fixed_rate: float | None = None


ARMS: dict[str, Arm] = {a.key: a for a in (
    Arm("B0", "round robin (plain Envoy load balancing, no ext_proc)", "round_robin"),
    Arm("B1", "least loaded", "least_loaded"),
    Arm("B2", "least loaded + prefix affinity (GIE / llm-d-like scorers)", "prefix_least_loaded"),
    Arm("R", "AI Grid routing, no compression", "aigrid"),
    Arm("C", "least loaded + load-driven compression", "least_loaded", compress=True),
    Arm("R+C", "AI Grid gateway: routing + load-driven compression", "aigrid", compress=True),
    Arm("R+C-noSLA", "R+C without SLA classes", "aigrid_no_sla", compress=True),
    Arm("R+C-noAff", "R+C without conversation affinity", "aigrid_no_affinity", compress=True),
    Arm("R+C-fixed", "R+C with a fixed keep-rate 0.5", "aigrid", compress=True, fixed_rate=0.5),
    # The waterfall's steps: B1 -> +routing -> +SLA -> +affinity (= R) -> +compression (= R+C).
    Arm("R-base", "AI Grid spill routing without SLA classes or affinity", "aigrid_no_sla_no_affinity"),
    Arm("R-noAff", "AI Grid routing with SLA classes, no affinity", "aigrid_no_affinity"),
    # Not an arm of the issue: the framework's transport-aware profile (estimated TTFT against the class's
    # budget), with and without compression, to see what a policy that knows GPU speed would reach.
    Arm("T", "transport-aware (estimated TTFT vs SLO budget)", "transport_aware"),
    Arm("T+C", "transport-aware + load-driven compression", "transport_aware", compress=True),
)}

MAIN_ARMS: tuple[str, ...] = ("B1", "B2", "R", "C", "R+C")
WATERFALL: tuple[tuple[str, str], ...] = (
    ("B1", "B1 least loaded"), ("R-base", "+ routing"), ("R-noAff", "+ SLA classes"),
    ("R", "+ affinity"), ("R+C", "+ compression"),
)
