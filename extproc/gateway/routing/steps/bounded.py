"""`bounded` (filter): at most a few candidates per decision, so that its cost is flat in the grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from extproc.gateway.routing.framework import Filter, RoutingContext, by_rtt
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.views import SiteView


@register("bounded")
class Bounded(Filter):
    """Keep the `nearest` closest candidates (RTT order, then tier, then name) and `sampled` more drawn from
    the rest by the request's key: the power of d choices, which balances load almost as well as looking at
    every site (Mitzenmacher 2001) at the cost of d. The draw is the router's keyed draw, so a conversation
    (or a RAG prompt's shared documents, whose key is the prompt's prefix) sees the same sites turn after
    turn and keeps its prefix cache. With at most nearest + sampled candidates it keeps them all."""

    class Params(StepParams):
        nearest: int = Field(default=2, ge=0, le=64)
        sampled: int = Field(default=3, ge=1, le=64)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.nearest = params.nearest
        self.sampled = params.sampled
        self.policy = env.config.policy
        self._order: list[str] = []  # every site, closest first, as of the last snapshot
        # The candidates in that order, per candidates list seen since the last snapshot (the profile hands
        # the same list object, one per model asked for, while the views stand; see Profile.decide): a
        # decision then costs the draw, not the grid. Keyed by id, the list itself kept beside it.
        self._ordered: dict[int, tuple[list[SiteView], list[SiteView]]] = {}

    def on_snapshot(self, views: Sequence[SiteView], now: float) -> None:
        self._order = [v.name for v in by_rtt(views, self.policy)]
        self._ordered.clear()

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        if len(sites) <= self.nearest + self.sampled:
            return sites
        ordered = self._in_order(sites)
        near = self.nearest
        return ordered[:near] + [ordered[near + i] for i in draw_distinct(len(ordered) - near, self.sampled, ctx.u)]

    def _in_order(self, sites: list[SiteView]) -> list[SiteView]:
        seen = self._ordered.get(id(sites))
        if seen is not None and seen[0] is sites:
            return seen[1]
        by_name = {s.name: s for s in sites}
        ordered = [by_name.pop(n) for n in self._order if n in by_name]
        ordered += by_rtt(list(by_name.values()), self.policy)  # sites the last snapshot did not have
        if len(self._ordered) >= 16:
            self._ordered.clear()
        self._ordered[id(sites)] = (sites, ordered)
        return ordered


def draw_distinct(m: int, k: int, u: float) -> list[int]:
    """k distinct indices in range(m) from one uniform draw u: a start and a stride coprime with m, both
    from u's digits (a start alone would always take neighbours)."""
    if k >= m:
        return list(range(m))
    start = min(int(u * m), m - 1)
    step = 1 + int((u * 7919.0 % 1.0) * (m - 1))
    while math.gcd(step, m) != 1:
        step = step % m + 1
    return [(start + j * step) % m for j in range(k)]
