"""What the cost model's steps share: a site's speed (configured or the stated default), the class SLO
bounds a term is measured against, and the request's load at a site as the views give it."""

from __future__ import annotations

from extproc.gateway.config.schema import EngineSpeed, GatewayConfig
from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.costmodel import DEFAULT_SPEED
from extproc.gateway.routing.views import SiteView


def speed_of(v: SiteView) -> EngineSpeed:
    return v.speed if v.speed is not None else DEFAULT_SPEED


class SloBounds:
    """Per class (TTFT ms, TPOT ms or None), read once from the config's `slo:`."""

    def __init__(self, config: GatewayConfig) -> None:
        self._by = {c: (config.slo.for_class(c).ttft_ms, config.slo.for_class(c).tpot_ms) for c in SlaClass}

    def __call__(self, sla: SlaClass) -> tuple[float, float | None]:
        return self._by[sla]


def batch_at(v: SiteView) -> float:
    """Running sequences per replica, with the requests sent since the site's last report."""
    return ((v.running or 0) + v.in_flight) / max(v.replicas, 1)
