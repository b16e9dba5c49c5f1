"""`prefix_cache` (scorer): GIE's approximate prefix affinity, with its per-site LRU of block hashes."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.routing.framework import Decision, RoutingContext, Scorer
from extproc.gateway.routing.prefix_index import PrefixIndex, kv_sized_capacity
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
        # Blocks per site when its KV size is unknown (GIE's default LRU size per pod).
        lru_capacity_per_site: int = Field(default=31_250, ge=1)
        # GIE's autoTune (on by default there): size each site's LRU from its real KV blocks,
        # replicas x `sites[].speed.kv_cache_tokens` / 16, where configured.
        auto_tune: bool = True

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.capacity = params.lru_capacity_per_site
        self.index = PrefixIndex(kv_sized_capacity(env, self.capacity) if params.auto_tune else self.capacity)

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        blocks = ctx.features.prefix_blocks
        if not blocks:
            return [0.0] * len(sites)
        return [self.index.matched(s.name, blocks) / len(blocks) for s in sites]

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        self.index.add(decision.site, ctx.features.prefix_blocks)
