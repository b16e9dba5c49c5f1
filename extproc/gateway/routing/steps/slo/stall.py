"""`tpot_prefill_stall` (estimator): what other requests' prefills add to each decode step (chunked
prefill shares the GPU's steps with the running streams). Owns a per-site rate of prefill work."""

from __future__ import annotations

import math

from pydantic import Field

from extproc.gateway.config.schema import EngineSpeed
from extproc.gateway.routing.costmodel import prefill_share, stall_ms
from extproc.gateway.routing.framework import Decision, Estimator, Predictions, RoutingContext
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.slo.common import RunningContext, SloBounds, batch_at, speed_of
from extproc.gateway.routing.views import SiteView


class PrefillRate:
    """Uncached prompt tokens per second sent to each site: an exponentially decaying sum over the last
    `horizon_s` (this gateway's own decisions)."""

    def __init__(self, horizon_s: float) -> None:
        self.tau = horizon_s
        self._v: dict[str, tuple[float, float]] = {}  # site -> (tokens/s, as of)

    def at(self, site: str, now: float) -> float:
        v, t = self._v.get(site, (0.0, now))
        dt = now - t
        return v * math.exp(-(0.0 if 0.0 > dt else dt) / self.tau)  # max(dt, 0.0), without the call

    def add(self, site: str, tokens: float, now: float) -> None:
        self._v[site] = (self.at(site, now) + tokens / self.tau, now)


@register("tpot_prefill_stall")
class TpotPrefillStall(Estimator):
    """TPOT += what the prefill riding in the decode steps adds once they turn compute-bound
    (`costmodel.stall_ms`); rho = the uncached prompt tokens per second routed to the site lately (plus this
    request's own, which lands in the same steps) over (replicas x prefill speed)."""

    class Params(StepParams):
        # The window the prefill rate is averaged over (a decaying sum), seconds: about one request's decode.
        horizon_s: float = Field(default=2.0, gt=0, le=600)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.context = RunningContext()
        self.rate = PrefillRate(params.horizon_s)

    def rho(self, s: SiteView, now: float, extra_tokens: float = 0.0, speed: EngineSpeed | None = None) -> float:
        sp = speed_of(s) if speed is None else speed
        return prefill_share(self.rate.at(s.name, now) + extra_tokens / self.rate.tau, s.replicas, sp)

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        ttft_slo, tpot_slo = self.slo.of(ctx.features.sla)
        now = ctx.now
        ms = []
        for s, n in zip(sites, pred.uncached):
            sp = speed_of(s)
            ms.append(stall_ms(sp, batch_at(s) + 1.0, self.rho(s, now, n, sp), self.context.per_seq(s)))
        pred.add_all(self.name, tpot_ms=ms, ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        if not ctx.features.inference:
            return
        n = decision.uncached_tokens if decision.uncached_tokens is not None else ctx.features.prompt_tokens
        self.rate.add(decision.site, n, ctx.now)
        self.context.add(decision.site, ctx.features.prompt_tokens)
