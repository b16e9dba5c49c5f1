"""What the cost model's steps share: a site's speed (configured or the stated default), the class SLO
bounds a term is measured against, and the request's load at a site as the views give it."""

from __future__ import annotations

from types import SimpleNamespace

from extproc.gateway.config.schema import EngineSpeed, GatewayConfig
from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.costmodel import DEFAULT_SPEED, per_seq_at
from extproc.gateway.routing.views import SiteView


def speed_of(v: SiteView) -> EngineSpeed:
    """The site's speed (configured, else the stated default), as a plain record of the same fields: the
    cost model reads them for every candidate of every decision, and a pydantic model's attribute costs
    about ten times a plain object's (its __getattr__ hook)."""
    sp = v.speed if v.speed is not None else DEFAULT_SPEED
    plain = _PLAIN.get(id(sp))
    if plain is None or plain[0] is not sp:
        if len(_PLAIN) >= 4096:  # speeds are per configured site: a handful; bounded all the same
            _PLAIN.clear()
        plain = _PLAIN[id(sp)] = (sp, SimpleNamespace(**dict(sp)))
    return plain[1]  # type: ignore[return-value]


# id(speed) -> (that speed, its plain copy); the speed is kept so that its id stays its own.
_PLAIN: dict[int, tuple[EngineSpeed, SimpleNamespace]] = {}


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
    r = v.replicas
    return ((v.running or 0) + v.in_flight) / (1 if 1 > r else r)  # max(r, 1), without the call


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
