"""`ttft_queue` (estimator): the prefill work queued ahead of the request, in time at the site's speed."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.routing.costmodel import DEFAULT_SPEED, queue_wait_ms
from extproc.gateway.routing.framework import Decision, Estimator, Predictions, RoutingContext
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.slo.common import SloBounds, speed_of
from extproc.gateway.routing.views import SiteView


@register("ttft_queue")
class TtftQueue(Estimator):
    """TTFT += the prefill work ahead of the request, over (replicas x prefill speed). Work, not a count:
    the larger of two estimates of it, tokens —

    - from the site's report: (waiting requests + those sent since the report) x the uncached prompt
      tokens a request sent there carries (this step's running mean per site, of what the profile
      predicted for the requests it routed): a site that receives RAG prompts weighs each queued request
      at thousands of tokens, a chat site at a few hundred;
    - from this gateway's own sends (`backlog`): every request routed there adds its uncached tokens to a
      fluid queue that drains at replicas x prefill speed. It sees a prefill already in progress, which
      the report counts as one more running request, and a burst sent since the report at its real size.
    """

    class Params(StepParams):
        # The per-site mean before any request was routed there, tokens.
        initial_tokens_per_request: float = Field(default=1000.0, gt=0)
        # Weight of each new request in the running mean (an exponential moving average).
        mean_weight: float = Field(default=0.05, gt=0, le=1)
        # False: the report's estimate alone (the ablation without the gateway's own backlog).
        backlog: bool = True

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.initial = params.initial_tokens_per_request
        self.alpha = params.mean_weight
        self.mean: dict[str, float] = {}
        self.use_backlog = params.backlog
        self._backlog: dict[str, tuple[float, float]] = {}  # site -> (tokens, as of)
        self._drain = {s.name: s.replicas * (s.speed or DEFAULT_SPEED).prefill_tokens_per_s for s in env.config.sites}

    def queued_tokens(self, s: SiteView, now: float = 0.0) -> float:
        reported = ((s.waiting or 0) + s.in_flight) * self.mean.get(s.name, self.initial)
        if not self.use_backlog:
            return reported
        own = self.backlog(s.name, now)
        return own if own > reported else reported  # max(reported, own), without the call

    def backlog(self, site: str, now: float) -> float:
        tokens, at = self._backlog.get(site, (0.0, now))
        dt = now - at
        left = tokens - (0.0 if 0.0 > dt else dt) * self._drain.get(site, DEFAULT_SPEED.prefill_tokens_per_s)
        return left if left > 0.0 else 0.0  # max(0.0, left)

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        ttft_slo, tpot_slo = self.slo.of(ctx.features.sla)
        now = ctx.now
        ms = [queue_wait_ms(self.queued_tokens(s, now), s.replicas, speed_of(s)) for s in sites]
        pred.add_all(self.name, ms, ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        if not ctx.features.inference:
            return
        n = decision.uncached_tokens if decision.uncached_tokens is not None else ctx.features.prompt_tokens
        m = self.mean.get(decision.site, self.initial)
        self.mean[decision.site] = m + self.alpha * (n - m)
        self._backlog[decision.site] = (self.backlog(decision.site, ctx.now) + n, ctx.now)
