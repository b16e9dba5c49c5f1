"""Built-in profiles: the product's policy, the baselines it is measured against, and its ablations.

They are data, like any profile an operator writes in aigrid.yaml (`routing.profiles`), which may
override them by name. The evaluation's arms are these profiles (see docs/evaluation.md):

| profile | what | arm |
|---|---|---|
| `aigrid` | the cost model: predicted TTFT (link + queued work + own uncached prefill) and TPOT (decode batch + prefill stalls) against the class SLO, near-site headroom kept for realtime, most slack wins | R |
| `aigrid_no_reserve` | the same without the realtime reserve | ablation |
| `aigrid_no_prefix` | the same without the prefix index (every prompt predicted uncached) | ablation |
| `aigrid_no_hold` | the same without holding batch work back while realtime TPOT is tight everywhere | ablation |
| `aigrid_no_sla` | the cost model with every class judged by the standard SLO, no reserve | ablation |
| `spill` | the earlier policy: affinity → realtime to the closest site with headroom → spill with hysteresis | |
| `spill_no_sla` / `spill_no_affinity` | its ablations | |
| `least_loaded` | the lower pressure of two sites drawn at random, whatever the class (Envoy's LEAST_REQUEST: power of two choices) | B1 |
| `prefix_least_loaded` | GIE / llm-d defaults: queue 2 + KV 2 + approximate prefix 3, max score | B2 |
| `transport_aware` | estimated TTFT (RTT + queue + prefill) against the class's SLO budget | |
| `round_robin` | each site in turn (plain Envoy load balancing) | B0 |
| `default_only` | everything to the default site | |
"""

from __future__ import annotations

from extproc.gateway.config.schema import ProfileSpec, StepSpec

# The default filters plus the model filter, for profiles that read the body anyway.
_MODEL_AWARE: list[str | StepSpec] = ["not_drained", "not_unhealthy", "known_load", "serves_model"]

# The cost model's terms, in the order they add up (realtime_reserve reads the others' sum).
_TERMS: list[str | StepSpec] = ["ttft_link", "ttft_queue", "ttft_prefill", "tpot_decode", "tpot_prefill_stall"]


def _cost_model(*, reserve: bool = True, prefix: bool = True, sla: bool = True, hold: bool = True) -> ProfileSpec:
    terms = list(_TERMS)
    if not prefix:
        terms[2] = StepSpec(type="ttft_prefill", params={"prefix_index": False})
    if reserve:
        terms.append("realtime_reserve")
    picker: str | StepSpec = "slo_slack"
    if not sla:
        picker = StepSpec(type="slo_slack", params={"sla_aware": False, "near_first": []})
    elif not hold:
        picker = StepSpec(type="slo_slack", params={"hold_classes": []})
    # `bounded` last: a decision looks at the nearest sites and a keyed sample of the rest, not the grid.
    return ProfileSpec(filters=[*_MODEL_AWARE, "bounded"], estimators=terms, picker=picker)


BUILTIN_PROFILES: dict[str, ProfileSpec] = {
    "aigrid": _cost_model(),
    "aigrid_no_reserve": _cost_model(reserve=False),
    "aigrid_no_prefix": _cost_model(prefix=False),
    "aigrid_no_hold": _cost_model(hold=False),
    "aigrid_no_sla": _cost_model(reserve=False, sla=False),
    "spill": ProfileSpec(filters=_MODEL_AWARE, rules=["affinity", "realtime", "spill"]),
    "spill_no_sla": ProfileSpec(filters=_MODEL_AWARE, rules=["affinity", StepSpec(type="spill", params={"sla_aware": False})]),
    "spill_no_affinity": ProfileSpec(filters=_MODEL_AWARE, rules=["realtime", "spill"]),
    # Power of two choices, as Envoy's LEAST_REQUEST balancer: the global least-loaded site would take
    # every request between two reports (identical grid: 0.80x round robin; with two choices >= 1.0x).
    "least_loaded": ProfileSpec(scorers=["least_pressure"], picker=StepSpec(type="two_choices", name="least_loaded")),
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
