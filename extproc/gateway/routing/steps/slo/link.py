"""`ttft_link` (estimator): the round trip to the site, measured or configured, in the predicted TTFT."""

from __future__ import annotations

from extproc.gateway.routing.framework import Estimator, Predictions, RoutingContext
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.steps.slo.common import SloBounds
from extproc.gateway.routing.views import SiteView


@register("ttft_link")
class TtftLink(Estimator):
    """TTFT += the site's RTT (request out, first token back)."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        ttft_slo, tpot_slo = self.slo.of(ctx.features.sla)
        pred.add_all(self.name, [s.rtt_ms for s in sites], ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo)
