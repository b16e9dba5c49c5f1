"""One request's view of each site: config + load snapshot + drain state → SiteView. Pure.

Pressure is the single load figure the policy compares, 0 = idle, 1 = at capacity (it can exceed 1 when
requests queue). It prefers the engine's own signals, which predict latency far better than GPU
utilisation (which reads ~100% whenever anything at all runs):
  pressure = max(kv_cache_usage, requests_waiting / queue_ref, requests_running / capacity)
where capacity is the engine's reported max_running, else the site's configured running_capacity.
With no engine view it falls back to GPU utilisation; with neither, the load is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from operator import attrgetter

from extproc.gateway.config.schema import EngineSpeed, GatewayConfig, SiteConfig, SiteRole
from extproc.gateway.loadmap.model import LoadSnapshot, SiteLoad


@dataclass(frozen=True, slots=True)
class SiteView:
    name: str
    role: SiteRole
    rtt_ms: float
    drained: bool
    # None: no fresh report (unknown).
    healthy: bool | None
    pressure: float | None
    age_s: float | None
    # Running requests that make pressure 1.0 (engine hint, else configured): turns requests this gateway
    # sent since the site's last report into pressure (see with_in_flight).
    capacity: float = 64.0
    # The engine's own figures, for scorers that weigh them separately (GIE's queue and KV scorers).
    waiting: int | None = None
    kv_usage: float | None = None
    # Requests this gateway sent since the site's last report (already folded into pressure).
    in_flight: int = 0
    # Models the site serves (configured, else reported by its agents); empty: unknown, any.
    models: frozenset[str] = frozenset()
    # Prefill speed (prompt tokens/s) for TTFT estimates: configured per site.
    prefill_tokens_per_s: float = 10_000.0
    # The engine's running requests (reported), replicas behind the site, and one replica's speeds for
    # the cost model (None: not configured; the cost model then uses its stated default).
    running: int | None = None
    replicas: int = 1
    speed: EngineSpeed | None = None

    @property
    def known(self) -> bool:
        return self.pressure is not None and self.healthy is not None


def site_pressure(load: SiteLoad, queue_ref: int, running_capacity: int) -> float | None:
    parts: list[float] = []
    if load.kv_cache_usage is not None:
        parts.append(load.kv_cache_usage)
    if load.requests_waiting is not None:
        parts.append(load.requests_waiting / float(queue_ref))
    if load.requests_running is not None:
        parts.append(load.requests_running / float(load.max_running or running_capacity))
    if parts:
        return max(parts)
    if load.gpu_utilization is not None:
        return load.gpu_utilization
    return None


def site_models(configured: Sequence[str], load: SiteLoad | None) -> frozenset[str]:
    """What a site serves: the configured list when there is one (the operator's word), else what its
    agents report from the engine's /v1/models; empty means unknown (any model may be sent)."""
    if configured:
        return frozenset(configured)
    if load is not None and load.models:
        return frozenset(load.models)
    return frozenset()


def site_view(config: GatewayConfig, site: SiteConfig, snapshot: LoadSnapshot, now: float) -> SiteView:
    """One site's view at `now` (see build_views)."""
    load = snapshot.sites.get(site.name)
    rtt = snapshot.measured_rtt_ms.get(site.name, site.rtt_ms)
    models = site_models(site.models, load)
    if load is None or load.age_s(now) > config.policy.stale_after_s:
        return SiteView(
            name=site.name,
            role=site.role,
            rtt_ms=rtt,
            drained=site.name in snapshot.drained,
            healthy=None,
            pressure=None,
            age_s=None if load is None else load.age_s(now),
            capacity=float(site.running_capacity),
            models=models,
            prefill_tokens_per_s=site.prefill_tokens_per_s,
            replicas=site.replicas,
            speed=site.speed,
        )
    return SiteView(
        name=site.name,
        role=site.role,
        rtt_ms=rtt,
        drained=site.name in snapshot.drained,
        healthy=load.healthy,
        pressure=site_pressure(load, config.policy.queue_ref, site.running_capacity) if load.healthy else None,
        age_s=load.age_s(now),
        capacity=float(load.max_running or site.running_capacity),
        waiting=load.requests_waiting,
        kv_usage=load.kv_cache_usage,
        models=models,
        prefill_tokens_per_s=site.prefill_tokens_per_s,
        running=load.requests_running,
        replicas=site.replicas,
        speed=site.speed,
    )


def build_views(config: GatewayConfig, snapshot: LoadSnapshot, now: float) -> list[SiteView]:
    return [site_view(config, site, snapshot, now) for site in config.sites]


class GridViews:
    """`build_views` kept up to date per site instead of rebuilt: a site's view is made again only when
    its report (the SiteLoad object), drain flag or measured RTT changes, or when its report turns stale,
    so the cost of `build(snap, now)` is in the sites that changed, not in the grid. Every view is the one
    `build_views(config, snap, now)` gives, but for `age_s`, which is the age at the view's making (the
    report's arrival, or its turning stale) rather than at `now`: no decision reads it.

    The list returned is a new object only when some view changed, and is never mutated afterwards: a
    caller may key its own caches on its identity (see `Profile.decide`)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._sites = list(config.sites)
        self._stale_after = config.policy.stale_after_s
        self._views: list[SiteView] = []
        # Per site, in config order: (its SiteLoad, drained, rtt) as of its view.
        self._inputs: list[tuple[SiteLoad | None, bool, float]] = []
        self._snap: LoadSnapshot | None = None
        self._now = float("-inf")
        # The oldest report among the fresh views (its receive time): the first to turn stale, since
        # `now - updated_at` falls as updated_at rises. None: no fresh view.
        self._oldest: float | None = None

    def build(self, snap: LoadSnapshot, now: float) -> list[SiteView]:
        if not self._views or now < self._now:
            # First build, or a clock that went back (a stale report could read fresh again).
            self._full(snap, now)
        elif snap is not self._snap:
            self._diff(snap, now)
        elif self._oldest is not None and max(0.0, now - self._oldest) > self._stale_after:
            self._diff(snap, now)
        self._now = now
        return self._views

    def _full(self, snap: LoadSnapshot, now: float) -> None:
        self._views = [site_view(self.config, site, snap, now) for site in self._sites]
        self._inputs = [self._input(site, snap) for site in self._sites]
        self._snap = snap
        self._oldest = self._oldest_fresh(snap)

    def _input(self, site: SiteConfig, snap: LoadSnapshot) -> tuple[SiteLoad | None, bool, float]:
        name = site.name
        return (snap.sites.get(name), name in snap.drained, snap.measured_rtt_ms.get(name, site.rtt_ms))

    def _diff(self, snap: LoadSnapshot, now: float) -> None:
        views: list[SiteView] | None = None
        stale_after = self._stale_after
        loads, drained, measured = snap.sites, snap.drained, snap.measured_rtt_ms
        for i, site in enumerate(self._sites):
            name = site.name
            load = loads.get(name)
            inp = (load, name in drained, measured.get(name, site.rtt_ms))
            old = self._views[i]
            fresh = load is not None and load.age_s(now) <= stale_after
            if inp == self._inputs[i] and fresh == (old.healthy is not None):
                continue
            if views is None:
                views = list(self._views)
            views[i] = site_view(self.config, site, snap, now)
            self._inputs[i] = inp
        if views is not None:
            self._views = views
        self._snap = snap
        self._oldest = self._oldest_fresh(snap)

    def _oldest_fresh(self, snap: LoadSnapshot) -> float | None:
        times = [inp[0].updated_at for inp, v in zip(self._inputs, self._views)
                 if inp[0] is not None and v.healthy is not None]
        return min(times) if times else None


# A copy of a view with two fields changed, as `dataclasses.replace` would make it, at a sixth of its cost:
# replace goes through the frozen class's __init__ (one object.__setattr__ per field); this sets the
# slots through their descriptors, for every field the class has.
_FIELDS = tuple(f.name for f in fields(SiteView))
_GET_ALL = attrgetter(*_FIELDS)
_SETTERS = tuple(getattr(SiteView, name).__set__ for name in _FIELDS)
_SET_PRESSURE = getattr(SiteView, "pressure").__set__
_SET_IN_FLIGHT = getattr(SiteView, "in_flight").__set__
_POST_INIT = hasattr(SiteView, "__post_init__")


def _copy(v: SiteView) -> SiteView:
    if _POST_INIT:  # a check the class's own __init__ runs would be skipped: take the slow road
        return replace(v)
    c = object.__new__(SiteView)
    for put, x in zip(_SETTERS, _GET_ALL(v)):
        put(c, x)
    return c


def with_in_flight(
    views: list[SiteView],
    sent_since_report: Mapping[str, int],
    peers: Mapping[str, int] | None = None,
    memo: dict[str, tuple[SiteView, int, SiteView]] | None = None,
) -> list[SiteView]:
    """Views with the requests this gateway routed since each site's last report (plus `peers`' counts,
    other gateways') added to its pressure.

    Reports arrive every few hundred ms; a burst inside that window would otherwise see the same idle
    snapshot and herd onto one site (48 users starting at once all picked the edge, which then needed ~8 s
    of prefill to dig out). Each request sent counts as one more running request until the site's next
    report, which already includes it, resets the count.

    `memo` (the router's, per site: the view, its count, the corrected view) hands back the corrected
    view made for the same view and count before, instead of making it again.
    """
    out: list[SiteView] = []
    for v in views:
        n = sent_since_report.get(v.name, 0)
        if peers:
            n += peers.get(v.name, 0)
        if n and v.pressure is not None:
            hit = memo.get(v.name) if memo is not None else None
            if hit is not None and hit[0] is v and hit[1] == n:
                v = hit[2]
            else:
                c = _copy(v)
                _SET_PRESSURE(c, v.pressure + n / v.capacity)
                _SET_IN_FLIGHT(c, n)
                if memo is not None:
                    memo[v.name] = (v, n, c)
                v = c
        out.append(v)
    return out
