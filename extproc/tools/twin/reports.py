"""Load reports as the agents build them and the gateways see them. Pure apart from the objects it keeps.

Two paths, the same snapshot:
- the wire path (`codec=True`): the agent's real combine step (`extproc/agent/combine.py`), the protobuf
  codec with its validation (`extproc/wire/loadreport/`), the node table (`apply_report`);
- the fast path (the default): the node entry the map would decode from that report, built directly.
Both then go through the map's own aggregation (`extproc/gateway/loadmap/aggregate.py`).
`tests/twin/test_twin.py` checks that a run is the same either way; the codec is tested on its own.
"""

from __future__ import annotations

from extproc.agent.combine import SourceKind, SourceReading, combine
from extproc.agent.prometheus import EngineSample
from extproc.gateway.loadmap.aggregate import aggregate_site
from extproc.gateway.loadmap.model import LoadSnapshot, NodeLoad, SiteLoad
from extproc.gateway.loadmap.nodes import apply_report, is_newer
from extproc.wire.loadreport.codec import decode_report, encode_report


class Agent:
    """One site's agent (one node, one engine endpoint summing the site's replicas, as `aigrid sim
    --replicas N` exports them)."""

    def __init__(self, site: str, interval_ms: float) -> None:
        self.site = site
        self.node = f"{site}-node1"
        self.agent_id = f"twin-{site}"
        self.interval_ms = int(interval_ms)
        self.ttl_s = 3 * self.interval_ms / 1000.0
        self.sequence = 0

    def report(self, running: int, waiting: int, kv_usage: float, now: float) -> bytes:
        """The report on the wire."""
        self.sequence += 1
        reading = SourceReading(
            f"vllm:{self.site}", SourceKind.engine, True,
            engine=EngineSample(requests_running=running, requests_waiting=waiting, kv_cache_usage=kv_usage),
        )
        r = combine([reading], site=self.site, node=self.node, agent_id=self.agent_id, sequence=self.sequence,
                    sent_unix_ms=int(now * 1000), interval_ms=self.interval_ms, ttl_ms=3 * self.interval_ms)
        return encode_report(r)

    def reading(self, running: int, waiting: int, kv_usage: float) -> tuple[str, int, int, int, float]:
        """The same report as plain values (the fast path): what its decoded node entry carries."""
        self.sequence += 1
        return (self.agent_id, self.sequence, running, waiting, kv_usage)


class LoadMap:
    """The map every gateway reads: reports in, an immutable snapshot out (one Redis, shared)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], NodeLoad] = {}
        self._sites: dict[str, SiteLoad] = {}
        self._by_site: dict[str, tuple[tuple[NodeLoad, ...], float]] = {}
        self._order: list[str] = []  # sites in the order their first node entered the table

    def receive(self, data: bytes, now: float) -> LoadSnapshot:
        r = decode_report(data)
        self.table, _ = apply_report(self.table, r, now)
        return self._snapshot(r.site, now)

    def receive_reading(self, agent: Agent, reading: tuple[str, int, int, int, float], now: float) -> LoadSnapshot:
        agent_id, sequence, running, waiting, kv = reading
        key = (agent.site, agent.node)
        if is_newer(self.table.get(key), agent_id, sequence):
            # As node_from_report builds it from that report (engine only, no GPU source, healthy).
            self.table[key] = NodeLoad(site=agent.site, node=agent.node, agent_id=agent_id, sequence=sequence,
                                       healthy=True, gpus=(), requests_running=running, requests_waiting=waiting,
                                       kv_cache_usage=kv, max_running=0, received_at=now, ttl_s=agent.ttl_s)
        return self._snapshot(agent.site, now)

    def _snapshot(self, changed: str, now: float) -> LoadSnapshot:
        """What `aggregate(table.values(), now)` gives, recomputing only the sites that can have changed:
        the one the report came from, and any whose node has expired since."""
        for name, (nodes, _) in list(self._by_site.items()):
            if name != changed and any(n.expired(now) for n in nodes):
                self._recompute(name, now)
        self._recompute(changed, now)
        sites = self._sites
        return LoadSnapshot(sites={k: sites[k] for k in self._order if k in sites}, built_at=now, connected=True)

    def _recompute(self, name: str, now: float) -> None:
        live = tuple(n for n in self.table.values() if n.site == name and not n.expired(now))
        if name not in self._by_site:
            self._order.append(name)
        self._by_site[name] = (live, now)
        if live:
            self._sites[name] = aggregate_site(name, live)  # type: ignore[assignment]
        else:
            self._sites.pop(name, None)
