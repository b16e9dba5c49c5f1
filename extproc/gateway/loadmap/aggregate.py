"""Node reports → site load. Pure.

Rules (docs/architecture.md repeats them):
- Expired node reports (older than their own TTL by the gateway's clock) are ignored.
- Unhealthy nodes count in `nodes` but contribute no load and no capacity.
- GPU utilisation is the GPU-weighted mean over healthy nodes' GPUs that report it.
- Memory used fraction is total used / total memory over those GPUs.
- KV-cache usage is the *worst* healthy node's: a full engine queues its requests whatever the others do.
- Running / waiting requests and capacity hints are summed.
- A site with no node reporting an engine view has requests_* and kv_cache_usage None (unknown).
- Stale sources are listed from every node, unhealthy ones included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from extproc.gateway.loadmap.model import NodeLoad, SiteLoad


def aggregate_site(site: str, nodes: Iterable[NodeLoad]) -> SiteLoad | None:
    nodes = list(nodes)
    if not nodes:
        return None
    healthy = [n for n in nodes if n.healthy]
    util_sum = 0.0
    util_n = 0
    mem_used = 0
    mem_total = 0
    gpus = 0
    kv: float | None = None
    running: int | None = None
    waiting: int | None = None
    max_running = 0
    stale: list[str] = []
    models: set[str] = set()
    for n in healthy:
        models.update(n.models)
        gpus += len(n.gpus)
        for g in n.gpus:
            if g.utilization is not None:
                util_sum += g.utilization
                util_n += 1
            if g.memory_used_bytes is not None and g.memory_total_bytes:
                mem_used += g.memory_used_bytes
                mem_total += g.memory_total_bytes
        if n.kv_cache_usage is not None:
            kv = n.kv_cache_usage if kv is None else max(kv, n.kv_cache_usage)
        if n.requests_running is not None:
            running = (running or 0) + n.requests_running
        if n.requests_waiting is not None:
            waiting = (waiting or 0) + n.requests_waiting
        max_running += n.max_running
    for n in nodes:
        # Every node's, the unhealthy included: their stale sources are what explains them.
        stale.extend(n.stale_sources)
    return SiteLoad(
        site=site,
        nodes=len(nodes),
        healthy_nodes=len(healthy),
        gpus=gpus,
        gpu_utilization=(util_sum / util_n) if util_n else None,
        memory_used_fraction=(mem_used / mem_total) if mem_total else None,
        kv_cache_usage=kv,
        requests_running=running,
        requests_waiting=waiting,
        max_running=max_running,
        updated_at=max(n.received_at for n in nodes),
        stale_sources=tuple(sorted(set(stale))),
        models=tuple(sorted(models)),
    )


def aggregate(nodes: Iterable[NodeLoad], now: float) -> dict[str, SiteLoad]:
    """Every site's load from the live (unexpired) node reports."""
    by_site: dict[str, list[NodeLoad]] = defaultdict(list)
    for n in nodes:
        if not n.expired(now):
            by_site[n.site].append(n)
    out: dict[str, SiteLoad] = {}
    for site, ns in by_site.items():
        agg = aggregate_site(site, ns)
        if agg is not None:
            out[site] = agg
    return out
