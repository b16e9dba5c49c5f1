"""Source readings → one NodeLoadReport. Pure: plain data in, a protobuf message out.

Rules (docs/load-agents.md repeats them):
- Only fresh readings count. A source whose last good sample is older than `stale_after` is listed in
  `stale_sources` and contributes nothing: its old figures are not replayed as if current.
- GPUs: the fresh GPU sources in configured order (NVML first, then DCGM endpoints); a GPU already seen
  (same UUID) is not counted twice, so NVML and a DCGM exporter on the same node do not double the GPUs.
- Engine: over the fresh engine endpoints, running and waiting requests and capacity hints are summed;
  KV-cache usage is the worst endpoint's (one full engine queues its requests whatever the others do);
  the models served are the union of the endpoints' /v1/models.
- Health: with engine endpoints configured, the node is healthy only while at least one of them answers
  (vLLM and SGLang serve /metrics from the serving process, so silence means it cannot serve). Without
  any engine endpoint the node is healthy when some source answered, or when none is configured at all
  (a heartbeat-only agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from extproc.agent.dcgm import GpuSample
from extproc.agent.prometheus import EngineSample
from extproc.wire.loadreport.codec import SCHEMA_VERSION
from extproc.wire.loadreport.load_report_pb2 import NodeLoadReport


class SourceKind(str, Enum):
    gpu = "gpu"
    engine = "engine"


@dataclass(frozen=True, slots=True)
class SourceReading:
    """What one source contributes to one report."""

    name: str  # e.g. "nvml", "dcgm:http://10.0.0.5:9400/metrics", "vllm:http://10.0.0.5:8000/metrics"
    kind: SourceKind
    fresh: bool
    gpus: tuple[GpuSample, ...] = ()
    engine: EngineSample | None = None


@dataclass(slots=True)
class SourceState:
    """A source's last good sample and when it was taken (agent monotonic clock)."""

    name: str
    kind: SourceKind
    last_ok_at: float | None = None
    gpus: tuple[GpuSample, ...] = ()
    engine: EngineSample | None = None
    last_error: str | None = None
    errors: int = 0

    def ok(self, now: float, *, gpus: Sequence[GpuSample] = (), engine: EngineSample | None = None) -> None:
        self.last_ok_at = now
        self.gpus = tuple(gpus)
        self.engine = engine
        self.last_error = None

    def failed(self, reason: str) -> None:
        self.last_error = reason
        self.errors += 1

    def reading(self, now: float, stale_after_s: float) -> SourceReading:
        fresh = self.last_ok_at is not None and (now - self.last_ok_at) <= stale_after_s
        if not fresh:
            return SourceReading(self.name, self.kind, False)
        return SourceReading(self.name, self.kind, True, self.gpus, self.engine)


def combine(
    readings: Sequence[SourceReading],
    *,
    site: str,
    node: str,
    agent_id: str,
    sequence: int,
    sent_unix_ms: int,
    interval_ms: int,
    ttl_ms: int,
) -> NodeLoadReport:
    r = NodeLoadReport(
        schema_version=SCHEMA_VERSION,
        site=site,
        node=node,
        agent_id=agent_id,
        sequence=sequence,
        sent_unix_ms=sent_unix_ms,
        interval_ms=interval_ms,
        ttl_ms=ttl_ms,
    )
    seen_uuids: set[str] = set()
    gpu_index = 0
    for rd in readings:
        if rd.kind is not SourceKind.gpu or not rd.fresh:
            continue
        for g in rd.gpus:
            if g.uuid:
                if g.uuid in seen_uuids:
                    continue
                seen_uuids.add(g.uuid)
            pg = r.gpus.add()
            # Indexes restart per source (two DCGM endpoints both have a gpu 0): renumber within the report.
            pg.index = gpu_index
            gpu_index += 1
            pg.uuid = g.uuid
            pg.name = g.name
            if g.utilization is not None:
                pg.utilization = g.utilization
            if g.memory_used_bytes is not None and g.memory_total_bytes:
                pg.memory_used_bytes = g.memory_used_bytes
            if g.memory_total_bytes:
                pg.memory_total_bytes = g.memory_total_bytes
            if g.power_watts is not None:
                pg.power_watts = g.power_watts
            if g.temperature_c is not None:
                pg.temperature_c = g.temperature_c

    engines = [rd for rd in readings if rd.kind is SourceKind.engine]
    fresh_engines = [rd.engine for rd in engines if rd.fresh and rd.engine is not None]
    if engines:
        e = r.engine
        e.SetInParent()
        e.endpoints = len(fresh_engines)
        e.requests_running = sum(x.requests_running for x in fresh_engines)
        e.requests_waiting = sum(x.requests_waiting for x in fresh_engines)
        e.max_running = sum(x.max_running for x in fresh_engines)
        kvs = [x.kv_cache_usage for x in fresh_engines if x.kv_cache_usage is not None]
        if kvs:
            e.kv_cache_usage = max(kvs)
        e.models.extend(sorted({m for x in fresh_engines for m in x.models}))

    if engines:
        r.healthy = bool(fresh_engines)
    else:
        r.healthy = not readings or any(rd.fresh for rd in readings)
    r.stale_sources.extend(rd.name for rd in readings if not rd.fresh)
    return r
