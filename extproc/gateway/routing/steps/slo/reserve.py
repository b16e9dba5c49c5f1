"""`realtime_reserve` (estimator): keep the near sites' headroom for realtime work. Run it after the
terms it reads (link, queue, prefill, decode, stall)."""

from __future__ import annotations

from pydantic import Field

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.costmodel import prefill_ms
from extproc.gateway.routing.framework import Estimator, Predictions, RoutingContext
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.slo.common import SloBounds, speed_of
from extproc.gateway.routing.views import SiteView


@register("realtime_reserve")
class RealtimeReserve(Estimator):
    """A standard or batch request may take a near site (within `policy.rtt_tolerance_ms` of the closest
    candidate) only while a realtime request arriving after it would still fit there: its predicted TTFT
    with this request's work queued ahead (the prediction so far, plus a `probe_prompt_tokens` prefill)
    and its TPOT with this request in the batch, within `margin` of the realtime SLO. Otherwise the site
    is marked reserved: the picker gives it to this request only when no other site would do. Realtime
    requests are never held back."""

    class Params(StepParams):
        probe_prompt_tokens: int = Field(default=400, ge=1)
        margin: float = Field(default=0.85, gt=0, le=1)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.probe = params.probe_prompt_tokens
        self.margin = params.margin

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        if ctx.features.sla is SlaClass.realtime or not sites:
            return
        rt_ttft, rt_tpot = self.slo.of(SlaClass.realtime)
        nearest = min(s.rtt_ms for s in sites)
        for i, s in enumerate(sites):
            if s.rtt_ms > nearest + ctx.policy.rtt_tolerance_ms:
                continue
            ttft = pred.ttft_ms[i] + prefill_ms(self.probe, speed_of(s))
            tpot = pred.tpot_ms[i]
            if ttft > self.margin * rt_ttft or (rt_tpot is not None and tpot > self.margin * rt_tpot):
                pred.reserved[i] = True
