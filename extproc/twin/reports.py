"""Load reports as the agents build them and the gateways see them: the agent's real combine step
(`extproc/agent/combine.py`), the protobuf wire format with its validation (`extproc/loadreport/`), the
node table and the site aggregation (`extproc/loadmap/`). Pure apart from the objects it keeps."""

from __future__ import annotations

from extproc.agent.combine import SourceKind, SourceReading, combine
from extproc.agent.prometheus import EngineSample
from extproc.loadmap.aggregate import aggregate
from extproc.loadmap.model import LoadSnapshot, NodeLoad
from extproc.loadmap.nodes import apply_report
from extproc.loadreport.codec import decode_report, encode_report


class Agent:
    """One site's agent (one node, one engine endpoint summing the site's replicas, as `aigrid sim
    --replicas N` exports them)."""

    def __init__(self, site: str, interval_ms: float) -> None:
        self.site = site
        self.node = f"{site}-node1"
        self.interval_ms = int(interval_ms)
        self.sequence = 0

    def report(self, running: int, waiting: int, kv_usage: float, now: float) -> bytes:
        self.sequence += 1
        reading = SourceReading(
            f"vllm:{self.site}", SourceKind.engine, True,
            engine=EngineSample(requests_running=running, requests_waiting=waiting, kv_cache_usage=kv_usage),
        )
        r = combine([reading], site=self.site, node=self.node, agent_id=f"twin-{self.site}", sequence=self.sequence,
                    sent_unix_ms=int(now * 1000), interval_ms=self.interval_ms, ttl_ms=3 * self.interval_ms)
        return encode_report(r)


class LoadMap:
    """The map every gateway reads: reports in, an immutable snapshot out (one Redis, shared)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], NodeLoad] = {}

    def receive(self, data: bytes, now: float) -> LoadSnapshot:
        r = decode_report(data)
        self.table, _ = apply_report(self.table, r, now)
        return LoadSnapshot(sites=aggregate(self.table.values(), now), built_at=now, connected=True)
