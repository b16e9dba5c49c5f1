"""Keeping the latest report of each node. Pure functions over a dict keyed by (site, node).

Freshness uses the gateway's receive time, never the sender's clock: a report counts as new only when
its (agent_id, sequence) moves forward, so a replayed or reordered message cannot refresh a dead node.
"""

from __future__ import annotations

from collections.abc import Mapping

from extproc.gateway.loadmap.model import GpuLoad, NodeLoad
from extproc.wire.loadreport.load_report_pb2 import NodeLoadReport

NodeTable = Mapping[tuple[str, str], NodeLoad]


def node_from_report(r: NodeLoadReport, received_at: float) -> NodeLoad:
    gpus = tuple(
        GpuLoad(
            utilization=g.utilization if g.HasField("utilization") else None,
            memory_used_bytes=g.memory_used_bytes if g.HasField("memory_used_bytes") else None,
            memory_total_bytes=g.memory_total_bytes if g.HasField("memory_total_bytes") else None,
        )
        for g in r.gpus
    )
    has_engine = r.HasField("engine") and r.engine.endpoints > 0
    e = r.engine
    # ttl_ms 0 (agent did not say): assume three intervals, else 10 s.
    ttl_ms = r.ttl_ms or (3 * r.interval_ms if r.interval_ms else 10_000)
    return NodeLoad(
        site=r.site,
        node=r.node,
        agent_id=r.agent_id,
        sequence=r.sequence,
        healthy=r.healthy,
        gpus=gpus,
        requests_running=e.requests_running if has_engine else None,
        requests_waiting=e.requests_waiting if has_engine else None,
        kv_cache_usage=e.kv_cache_usage if has_engine and e.HasField("kv_cache_usage") else None,
        max_running=e.max_running if has_engine else 0,
        received_at=received_at,
        ttl_s=ttl_ms / 1000.0,
        stale_sources=tuple(r.stale_sources),
        models=tuple(e.models) if has_engine else (),
    )


def is_newer(current: NodeLoad | None, agent_id: str, sequence: int) -> bool:
    """A report is news when no entry exists, the agent restarted (new id), or the sequence advanced."""
    if current is None:
        return True
    if agent_id != current.agent_id:
        return True
    return sequence > current.sequence


def apply_report(
    table: NodeTable, r: NodeLoadReport, received_at: float
) -> tuple[dict[tuple[str, str], NodeLoad], bool]:
    """Table with `r` applied, and whether it changed anything."""
    key = (r.site, r.node)
    if not is_newer(table.get(key), r.agent_id, r.sequence):
        return dict(table), False
    out = dict(table)
    out[key] = node_from_report(r, received_at)
    return out, True


def age_from_ttl(ttl_ms: int, pttl_ms: int) -> float:
    """How long ago a key was written, from the TTL the agent set and the TTL Redis says is left.

    Both figures come from Redis's clock alone, so sender clock skew does not enter.
    """
    if ttl_ms <= 0 or pttl_ms < 0:
        return 0.0
    return max(0.0, (ttl_ms - pttl_ms) / 1000.0)


def drop_expired(table: NodeTable, now: float) -> dict[tuple[str, str], NodeLoad]:
    return {k: v for k, v in table.items() if not v.expired(now)}
