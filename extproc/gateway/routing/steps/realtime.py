"""`realtime` (rule): realtime requests to the closest site with headroom, else the least loaded."""

from __future__ import annotations

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.framework import (
    Decision,
    RoutingContext,
    Rule,
    by_rtt,
    fmt_p,
    has_headroom,
)
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


@register("realtime")
class Realtime(Rule):
    """Realtime requests: the closest site with headroom, else the least loaded."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        if ctx.features.sla is not SlaClass.realtime:
            return None
        ordered = by_rtt(sites, ctx.policy)
        for s in ordered:
            if has_headroom(s, ctx.policy):
                return Decision(s.name, f"realtime: lowest RTT with headroom {s.name} ({s.rtt_ms:.1f} ms, p={fmt_p(s.pressure)})", self.name, s.pressure)
        best = min(ordered, key=lambda s: s.pressure if s.pressure is not None else 9e9)
        return Decision(best.name, f"realtime: no headroom anywhere, least loaded {best.name} (p={fmt_p(best.pressure)})", self.name, best.pressure)
