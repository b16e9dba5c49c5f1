"""`default_only` (rule, always decides): the baseline that sends everything to the default site."""

from __future__ import annotations

from extproc.gateway.routing.framework import Decision, RoutingContext, Rule, fallback
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


@register("default_only")
class DefaultOnly(Rule):
    """Baseline: the default site takes everything it can (falls back when it is filtered out)."""

    always_decides = True

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        for s in sites:
            if s.name == ctx.default_site:
                return Decision(s.name, f"default only {s.name}", self.name, s.pressure)
        return fallback(ctx, sites, "default site filtered out")
