"""What the cost model's steps share: a site's speed (configured or the stated default), the class SLO
bounds a term is measured against, and the request's load at a site as the views give it."""

from __future__ import annotations

from extproc.gateway.config.schema import EngineSpeed, GatewayConfig
from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.costmodel import DEFAULT_SPEED, per_seq_at
from extproc.gateway.routing.views import SiteView


def speed_of(v: SiteView) -> EngineSpeed:
    return v.speed if v.speed is not None else DEFAULT_SPEED


class SloBounds:
    """Per class (TTFT ms, TPOT ms or None), read once from the config's `slo:`."""

    def __init__(self, config: GatewayConfig) -> None:
        self._by = {c: (config.slo.for_class(c).ttft_ms, config.slo.for_class(c).tpot_ms) for c in SlaClass}
        # The same lookup without a Python-level call (the estimators ask once per decision each).
        self.of = self._by.__getitem__

    def __call__(self, sla: SlaClass) -> tuple[float, float | None]:
        return self._by[sla]


def batch_at(v: SiteView) -> float:
    """Running sequences per replica, with the requests sent since the site's last report."""
    return ((v.running or 0) + v.in_flight) / max(v.replicas, 1)



class RunningContext:
    """The mean context (tokens) of the sequences running at each site, as this gateway's own decisions
    say: a decaying average of the prompts it routed there. A decode step reads every running sequence's
    whole context, shared prefixes included (paged attention reads them once per sequence), so the
    engine's KV usage, which counts a shared block once, would under-count it."""

    def __init__(self, weight: float = 0.05) -> None:
        self.w = weight
        self._v: dict[str, float] = {}

    def at(self, site: str) -> float | None:
        return self._v.get(site)

    def add(self, site: str, tokens: float) -> None:
        v = self._v.get(site)
        self._v[site] = tokens if v is None else v + self.w * (tokens - v)

    def per_seq(self, v: SiteView) -> float:
        return per_seq_at(speed_of(v), self._v.get(v.name))
