"""`ttft` (scorer): transport-aware estimate of the time to first token against the class's budget."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.framework import RoutingContext, Scorer
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.views import SiteView


@register("ttft")
class TimeToFirstToken(Scorer):
    """Transport-aware: estimates each site's time to first token for this request — link RTT, the queue
    ahead of it, and its own prefill at the site's prefill speed — against the request's SLA budget
    (`slo.<class>.ttft_ms`). Score = 1 − estimate / budget, clamped to [0, 1].

    Queue estimate: waiting requests (plus those sent since the last report) × `mean_prompt_tokens`,
    plus, when the site runs at or above capacity, one more mean prefill (a slot must free first)."""

    class Params(StepParams):
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
