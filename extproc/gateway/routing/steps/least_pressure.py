"""`least_pressure` (scorer): what load-aware routers do, 1 at pressure 0 falling to 0 at pressure 2."""

from __future__ import annotations

from extproc.gateway.routing.framework import RoutingContext, Scorer
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


@register("least_pressure")
class LeastPressure(Scorer):
    """1 at pressure 0, falling linearly to 0 at pressure 2 (twice full): what load-aware routers do."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        return [0.0 if s.pressure is None else 1.0 - min(max(s.pressure, 0.0), 2.0) / 2.0 for s in sites]
