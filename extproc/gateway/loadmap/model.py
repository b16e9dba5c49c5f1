"""Plain data for the load map: a node's load (from one report) and a site's load (aggregated)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GpuLoad:
    utilization: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """One node's report as plain data, stamped with the gateway's own receive time."""

    site: str
    node: str
    agent_id: str
    sequence: int
    healthy: bool
    gpus: tuple[GpuLoad, ...] = ()
    # Engine view; None when the node reports no inference-server source.
    requests_running: int | None = None
    requests_waiting: int | None = None
    kv_cache_usage: float | None = None
    max_running: int = 0
    # Gateway monotonic clock (seconds) when this sequence was first seen, and how long it lives.
    received_at: float = 0.0
    ttl_s: float = 10.0
    stale_sources: tuple[str, ...] = ()
    # Model ids the node's engines serve (from their /v1/models); empty = not known.
    models: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.node)

    def expired(self, now: float) -> bool:
        return now - self.received_at > self.ttl_s


@dataclass(frozen=True, slots=True)
class SiteLoad:
    """A site's load as the policy sees it. See aggregate.py for how node reports combine."""

    site: str
    nodes: int
    healthy_nodes: int
    gpus: int
    gpu_utilization: float | None
    memory_used_fraction: float | None
    kv_cache_usage: float | None
    requests_running: int | None
    requests_waiting: int | None
    max_running: int
    # Newest receive time among the site's nodes (gateway monotonic clock).
    updated_at: float
    stale_sources: tuple[str, ...] = ()
    # Models the site's healthy nodes report serving (their engine's /v1/models), sorted.
    models: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.healthy_nodes > 0

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.updated_at)


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """What the request path reads: immutable, swapped whole when Redis brings news."""

    sites: dict[str, SiteLoad] = field(default_factory=dict)
    drained: frozenset[str] = frozenset()
    # Monotonic time this snapshot was built, and whether the map reader is connected to Redis now.
    built_at: float = 0.0
    connected: bool = False
    # Per-site RTT measured by the gateway's probe (ms); overrides the configured figure.
    measured_rtt_ms: dict[str, float] = field(default_factory=dict)
