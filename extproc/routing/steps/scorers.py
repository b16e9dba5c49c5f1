"""Scorers: a score in [0, 1] per candidate site, higher is better; a profile sums them with weights."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field

from extproc.routing.features import SlaClass
from extproc.routing.framework import Decision, RoutingContext, Scorer
from extproc.routing.registry import NoParams, StepEnv, register
from extproc.routing.views import SiteView


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register("least_pressure")
class LeastPressure(Scorer):
    """1 at pressure 0, falling linearly to 0 at pressure 2 (twice full): what load-aware routers do."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        return [0.0 if s.pressure is None else 1.0 - min(max(s.pressure, 0.0), 2.0) / 2.0 for s in sites]


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


@register("prefix_cache")
class PrefixCache(Scorer):
    """GIE's approximate prefix scorer: the share of the request's leading prompt blocks (64-character
    chained hashes, `features.prefix_blocks`) this gateway last sent to each site. The index is this
    gateway's own (per-site LRU of block hashes), as in GIE: it does not see what other replicas sent."""

    reads_body = True
    needs_prefix_blocks = True

    class Params(_Params):
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


@register("ttft")
class TimeToFirstToken(Scorer):
    """Transport-aware: estimates each site's time to first token for this request — link RTT, the queue
    ahead of it, and its own prefill at the site's prefill speed — against the request's SLA budget
    (`slo.<class>.ttft_ms`). Score = 1 − estimate / budget, clamped to [0, 1].

    Queue estimate: waiting requests (plus those sent since the last report) × `mean_prompt_tokens`,
    plus, when the site runs at or above capacity, one more mean prefill (a slot must free first)."""

    class Params(_Params):
        mean_prompt_tokens: int = Field(default=1500, ge=1)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.mean = params.mean_prompt_tokens
        self.budget_ms = {c: env.config.slo.for_class(c).ttft_ms for c in SlaClass}

    def estimate_ms(self, s: SiteView, prompt_tokens: int) -> float:
        queued = (s.waiting or 0) + s.in_flight
        if s.pressure is not None and s.pressure >= 1.0:
            queued += 1
        tokens = queued * self.mean + max(prompt_tokens, 1)
        return s.rtt_ms + 1000.0 * tokens / s.prefill_tokens_per_s

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        budget = self.budget_ms[ctx.features.sla]
        n = ctx.features.prompt_tokens
        return [max(0.0, 1.0 - self.estimate_ms(s, n) / budget) for s in sites]
