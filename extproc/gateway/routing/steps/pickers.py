"""Pickers: choose one site from the scored candidates."""

from __future__ import annotations

from extproc.gateway.routing.framework import (
    Decision,
    Picker,
    RoutingContext,
    by_rtt,
    fmt_p,
)
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


def _label(name: str) -> str:
    return name.replace("_", " ")


@register("max_score")
class MaxScore(Picker):
    """The highest total score; ties go to the closest site (RTT order, then tier, then name)."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        score_of = {s.name: sc for s, sc in zip(sites, scores)}
        best = None
        for s in by_rtt(sites, ctx.policy):
            if best is None or score_of[s.name] > score_of[best.name]:
                best = s
        assert best is not None
        return Decision(best.name, f"{_label(self.name)} {best.name} (score={score_of[best.name]:.2f}, p={fmt_p(best.pressure)})", self.name, best.pressure)


@register("weighted_random")
class WeightedRandom(Picker):
    """A site drawn with probability proportional to its score (all zero → uniform)."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        weights = [max(0.0, x) for x in scores]
        total = sum(weights)
        if total <= 0:
            weights = [1.0] * len(sites)
        chosen = draw_weighted(sites, weights, ctx.u)
        return Decision(chosen.name, f"{_label(self.name)} {chosen.name} (p={fmt_p(chosen.pressure)})", self.name, chosen.pressure)


@register("random")
class Random(Picker):
    """A site drawn uniformly, ignoring scores."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        s = sites[min(int(ctx.u * len(sites)), len(sites) - 1)]
        return Decision(s.name, f"{_label(self.name)} {s.name}", self.name, s.pressure)


@register("round_robin")
class RoundRobin(Picker):
    """Each candidate in turn (by name), ignoring scores: plain Envoy load balancing across sites."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)
        self.counter = 0

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        ordered = sorted(sites, key=lambda s: s.name)
        s = ordered[self.counter % len(ordered)]
        return Decision(s.name, f"{_label(self.name)} {s.name}", self.name, s.pressure)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        if decision.step == self.name:
            self.counter += 1
