"""GIE's load scorers: `queue` (min-max of waiting requests) and `kv_cache` (1 − KV usage)."""

from __future__ import annotations

from extproc.gateway.routing.framework import RoutingContext, Scorer
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


@register("queue")
class Queue(Scorer):
    """GIE's queue scorer: (max − q) / (max − min) over the candidates, q = waiting requests plus those
    this gateway sent since the site's last report (the same in-flight correction every profile gets);
    all equal → 1."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        qs = [(s.waiting or 0) + s.in_flight for s in sites]
        lo, hi = min(qs), max(qs)
        if hi == lo:
            return [1.0] * len(sites)
        return [(hi - q) / (hi - lo) for q in qs]


@register("kv_cache")
class KvCache(Scorer):
    """GIE's KV-cache utilisation scorer: 1 − KV usage (unknown usage scores 0.5)."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        return [0.5 if s.kv_usage is None else 1.0 - min(max(s.kv_usage, 0.0), 1.0) for s in sites]
