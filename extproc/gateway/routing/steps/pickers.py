"""Pickers: choose one site from the scored candidates."""

from __future__ import annotations

from typing import Literal

from extproc.gateway.routing.framework import (
    Decision,
    Picker,
    RoutingContext,
    by_rtt,
    draw_weighted,
    fmt_p,
)
from extproc.gateway.routing.registry import NoParams, StepEnv, StepParams, register
from extproc.gateway.routing.views import SiteView


def _label(name: str) -> str:
    return name.replace("_", " ")


@register("max_score")
class MaxScore(Picker):
    """The highest total score. Ties are drawn (`ctx.u`: the request's key, else the gateway's seeded
    random), as GIE's picker shuffles before it picks: a fixed tie-break would send every tie, and under
    saturation every request, to the same site. `ties: closest` gives them to the closest site instead
    (RTT order, then tier, then name)."""

    class Params(StepParams):
        ties: Literal["random", "closest"] = "random"

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.closest = params.ties == "closest"

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        top = max(scores)
        tied = [s for s, sc in zip(sites, scores) if sc >= top - 1e-12]
        if len(tied) == 1:
            best = tied[0]
        elif self.closest:
            best = by_rtt(tied, ctx.policy)[0]
        else:
            tied.sort(key=lambda s: s.name)  # the draw, not the candidates' order, decides
            best = tied[min(int(ctx.u * len(tied)), len(tied) - 1)]
        return Decision(best.name, f"{_label(self.name)} {best.name} (score={top:.2f}, p={fmt_p(best.pressure)})", self.name, best.pressure)


@register("two_choices")
class TwoChoices(Picker):
    """The higher score of two candidates drawn at random (power of two choices, as Envoy's LEAST_REQUEST
    balancer does with its default choice_count 2): between two load reports every decision sees the same
    scores, and the global best would take every request until the next one (herding); two random
    candidates spread them while still steering away from the loaded sites."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        n = len(sites)
        if n == 1:
            best = 0
        else:
            # Two distinct candidates from the one draw: the first from u, the second from what is left.
            x = ctx.u * n
            i = min(int(x), n - 1)
            j = min(int((x - i) * (n - 1)), n - 2)
            j += j >= i
            order = sorted(range(n), key=lambda k: sites[k].name)  # the draw, not the candidates' order
            a, b = order[i], order[j]
            best = a if scores[a] >= scores[b] else b
        s = sites[best]
        return Decision(s.name, f"{_label(self.name)} {s.name} (score={scores[best]:.2f}, p={fmt_p(s.pressure)})", self.name, s.pressure)


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
