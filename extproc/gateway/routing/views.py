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
from dataclasses import dataclass, replace

from extproc.gateway.config.schema import EngineSpeed, GatewayConfig, SiteRole
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


def build_views(config: GatewayConfig, snapshot: LoadSnapshot, now: float) -> list[SiteView]:
    stale_after = config.policy.stale_after_s
    views: list[SiteView] = []
    for site in config.sites:
        load = snapshot.sites.get(site.name)
        rtt = snapshot.measured_rtt_ms.get(site.name, site.rtt_ms)
        models = site_models(site.models, load)
        if load is None or load.age_s(now) > stale_after:
            views.append(
                SiteView(
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
            )
            continue
        views.append(
            SiteView(
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
        )
    return views


def with_in_flight(views: list[SiteView], sent_since_report: Mapping[str, int]) -> list[SiteView]:
    """Views with the requests this gateway routed since each site's last report added to its pressure.

    Reports arrive every few hundred ms; a burst inside that window would otherwise see the same idle
    snapshot and herd onto one site (48 users starting at once all picked the edge, which then needed ~8 s
    of prefill to dig out). Each request sent counts as one more running request until the site's next
    report, which already includes it, resets the count.
    """
    out: list[SiteView] = []
    for v in views:
        n = sent_since_report.get(v.name, 0)
        if n and v.pressure is not None:
            v = replace(v, pressure=v.pressure + n / v.capacity, in_flight=n)
        out.append(v)
    return out
