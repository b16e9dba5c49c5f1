"""`ttft_prefill` (estimator): the request's own prefill, of the tokens that will miss the site's prefix
cache, at the site's prefill speed. Owns the prefix index it predicts the misses from."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.routing.costmodel import TOKENS_PER_BLOCK, prefill_ms
from extproc.gateway.routing.framework import Decision, Estimator, Predictions, RoutingContext
from extproc.gateway.routing.prefix_index import PrefixIndex, kv_sized_capacity
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.slo.common import SloBounds, speed_of
from extproc.gateway.routing.views import SiteView


@register("ttft_prefill")
class TtftPrefill(Estimator):
    """TTFT += uncached prompt tokens / prefill speed. Uncached: the prompt less the leading blocks this
    gateway last sent to the site (its prefix index, sized from the site's KV blocks). On a site of several
    replicas the site's own balancer picks the replica, so a conversation's second turn may land where its
    first is not cached; popular shared prefixes are on every replica soon. Counted as hits all the same
    (measured in the twin: dividing by the replicas predicted twice the misses there were).)"""

    reads_body = True
    needs_prefix_blocks = True

    class Params(StepParams):
        # False: every prompt is predicted uncached (the ablation without prefix awareness).
        prefix_index: bool = True
        lru_capacity_per_site: int = Field(default=31_250, ge=1)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.use_index = params.prefix_index
        self.index = PrefixIndex(kv_sized_capacity(env, params.lru_capacity_per_site))
        if not self.use_index:
            self.needs_prefix_blocks = False

    def uncached(self, s: SiteView, prompt_tokens: int, blocks: tuple[int, ...]) -> int:
        if not self.use_index or not blocks:
            return prompt_tokens
        hit = self.index.matched(s.name, blocks) * TOKENS_PER_BLOCK
        return max(0, int(prompt_tokens - hit))

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        f = ctx.features
        ttft_slo, tpot_slo = self.slo.of(f.sla)
        uncached = [self.uncached(s, f.prompt_tokens, f.prefix_blocks) for s in sites]
        pred.uncached[:] = uncached
        pred.add_all(self.name, [prefill_ms(n, speed_of(s)) for n, s in zip(uncached, sites)],
                     ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        if self.use_index:
            self.index.add(decision.site, ctx.features.prefix_blocks)
