"""`tpot_decode` (estimator): the decode step at the site's batch, with this request in it."""

from __future__ import annotations

from extproc.gateway.routing.costmodel import decode_step_ms
from extproc.gateway.routing.framework import Decision, Estimator, Predictions, RoutingContext
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.steps.slo.common import RunningContext, SloBounds, batch_at, speed_of
from extproc.gateway.routing.views import SiteView


@register("tpot_decode")
class TpotDecode(Estimator):
    """TPOT += one decode step with (running per replica + 1) sequences, at the site's decode speed and
    its running context."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.context = RunningContext()

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        ttft_slo, tpot_slo = self.slo.of(ctx.features.sla)
        pred.add_all(self.name, tpot_ms=[decode_step_ms(speed_of(s), batch_at(s) + 1.0, self.context.per_seq(s)) for s in sites],
                     ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        if ctx.features.inference:
            self.context.add(decision.site, ctx.features.prompt_tokens)
