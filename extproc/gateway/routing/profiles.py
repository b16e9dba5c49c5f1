"""Built-in profiles: the product's policy, the baselines it is measured against, and its ablations.

They are data, like any profile an operator writes in aigrid.yaml (`routing.profiles`), which may
override them by name. The evaluation's arms are these profiles (see docs/evaluation.md):

| profile | what | arm |
|---|---|---|
| `aigrid` | (model filter) affinity → realtime to the closest site with headroom → spill with hysteresis | R |
| `aigrid_no_sla` | the same with every class treated as standard | ablation |
| `aigrid_no_affinity` | without conversation affinity | ablation |
| `least_loaded` | the lowest pressure, whatever the class (what load-aware routers do) | B1 |
| `prefix_least_loaded` | GIE / llm-d defaults: queue 2 + KV 2 + approximate prefix 3, max score | B2 |
| `transport_aware` | estimated TTFT (RTT + queue + prefill) against the class's SLO budget | |
| `round_robin` | each site in turn (plain Envoy load balancing) | B0 |
| `default_only` | everything to the default site | |
"""

from __future__ import annotations

from extproc.gateway.config.schema import ProfileSpec, StepSpec

# The default filters plus the model filter, for profiles that read the body anyway.
_MODEL_AWARE: list[str | StepSpec] = ["not_drained", "not_unhealthy", "known_load", "serves_model"]

BUILTIN_PROFILES: dict[str, ProfileSpec] = {
    "aigrid": ProfileSpec(filters=_MODEL_AWARE, rules=["affinity", "realtime", "spill"]),
    "aigrid_no_sla": ProfileSpec(filters=_MODEL_AWARE, rules=["affinity", StepSpec(type="spill", params={"sla_aware": False})]),
    "aigrid_no_affinity": ProfileSpec(filters=_MODEL_AWARE, rules=["realtime", "spill"]),
    "least_loaded": ProfileSpec(scorers=["least_pressure"], picker=StepSpec(type="max_score", name="least_loaded")),
    "prefix_least_loaded": ProfileSpec(
        filters=_MODEL_AWARE,
        scorers=[
            StepSpec(type="queue", weight=2),
            StepSpec(type="kv_cache", weight=2),
            StepSpec(type="prefix_cache", weight=3),
        ],
        picker="max_score",
    ),
    "transport_aware": ProfileSpec(scorers=["ttft"], picker="max_score"),
    # Plain Envoy balancing knows health, not load: no known_load filter.
    "round_robin": ProfileSpec(filters=["not_drained", "not_unhealthy"], picker="round_robin"),
    "default_only": ProfileSpec(rules=["default_only"]),
}
