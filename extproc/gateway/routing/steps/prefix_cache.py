"""`prefix_cache` (scorer): GIE's approximate prefix affinity, with its per-site LRU of block hashes."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import Field

from extproc.gateway.routing.framework import Decision, RoutingContext, Scorer
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.views import SiteView


@register("prefix_cache")
class PrefixCache(Scorer):
    """GIE's approximate prefix scorer: the share of the request's leading prompt blocks (64-character
    chained hashes, `features.prefix_blocks`) this gateway last sent to each site. The index is this
    gateway's own (per-site LRU of block hashes), as in GIE: it does not see what other replicas sent."""

    reads_body = True
    needs_prefix_blocks = True

    class Params(StepParams):
        lru_capacity_per_site: int = Field(default=31_250, ge=1)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.capacity = params.lru_capacity_per_site
        self.index: dict[str, OrderedDict[int, None]] = {}

    def _matched(self, site: str, blocks: tuple[int, ...]) -> int:
        lru = self.index.get(site)
        if not lru:
            return 0
        n = 0
        for b in blocks:
            if b not in lru:
                break
            n += 1
        return n

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        blocks = ctx.features.prefix_blocks
        if not blocks:
            return [0.0] * len(sites)
        return [self._matched(s.name, blocks) / len(blocks) for s in sites]

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        blocks = ctx.features.prefix_blocks
        if not blocks:
            return
        lru = self.index.setdefault(decision.site, OrderedDict())
        for b in blocks:
            lru[b] = None
            lru.move_to_end(b)
        while len(lru) > self.capacity:
            lru.popitem(last=False)
