"""`affinity` (rule): a conversation stays on the site it used last while that site has headroom (KV-cache
reuse). The step owns its table (`table.py`)."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.routing.framework import (
    Decision,
    RoutingContext,
    Rule,
    fmt_p,
    has_headroom,
)
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.affinity.table import AffinityTable
from extproc.gateway.routing.views import SiteView


@register("affinity")
class Affinity(Rule):
    """Keep a conversation on the site it used last while that site has headroom (KV-cache reuse). The
    table is this gateway's memory (a hint): across replicas, the router's keyed draw makes the first
    placement agree (see `router.py`)."""

    class Params(StepParams):
        # Conversations remembered this long, at most this many (defaults: policy.affinity_*).
        ttl_s: float | None = Field(default=None, ge=0)
        max_entries: int | None = Field(default=None, ge=0)
        # False: key on the conversation header alone (no body read; the headers-only path can use it).
        from_body: bool = True

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        pol = env.config.policy
        self.table = AffinityTable(
            pol.affinity_max_entries if params.max_entries is None else params.max_entries,
            pol.affinity_ttl_s if params.ttl_s is None else params.ttl_s,
        )
        self.reads_body = params.from_body

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        prev = self.table.get(ctx.features.conversation_key, ctx.now)
        if prev is None:
            return None
        for s in sites:
            if s.name == prev and has_headroom(s, ctx.policy):
                return Decision(s.name, f"affinity: conversation stays on {s.name} (p={fmt_p(s.pressure)})", self.name, s.pressure)
        return None

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        self.table.put(ctx.features.conversation_key, decision.site, ctx.now)
