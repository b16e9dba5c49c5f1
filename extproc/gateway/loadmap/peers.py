"""Other gateways' in-flight counts: message codec and the table that sums them. Pure.

Each gateway replica publishes, on `<prefix>:inflight`, how many requests it sent to each site since it
last saw that site's report: `{"g": "<gateway id>", "s": {"<site>": n, ...}}`. Every replica keeps the
latest message per peer, drops peers silent for longer than `peer_ttl_s` (a dead gateway's counts must
not linger), and adds the sum to its own count when it judges pressure. A site's new report resets the
peers' counts for it too (the router drops them), until they publish again: the error is bounded by one
publish interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from extproc.wire.contract import SITE_NAME

MAX_SITES = 1024
MAX_COUNT = 1_000_000
MAX_ID = 64


class PeerMessageRejected(ValueError):
    pass


def encode_in_flight(gateway_id: str, counts: Mapping[str, int]) -> bytes:
    return orjson.dumps({"g": gateway_id, "s": {k: int(v) for k, v in counts.items() if v}})


def decode_in_flight(data: bytes) -> tuple[str, dict[str, int]]:
    """(gateway id, counts) from a message; raises PeerMessageRejected with the reason."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PeerMessageRejected(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PeerMessageRejected("not an object")
    gid, counts = doc.get("g"), doc.get("s")
    if not isinstance(gid, str) or not 0 < len(gid) <= MAX_ID:
        raise PeerMessageRejected("gateway id missing or too long")
    if not isinstance(counts, dict) or len(counts) > MAX_SITES:
        raise PeerMessageRejected("counts missing or too many sites")
    out: dict[str, int] = {}
    for site, n in counts.items():
        if not SITE_NAME.match(site):
            raise PeerMessageRejected(f"bad site name {site[:70]!r}")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_COUNT:
            raise PeerMessageRejected(f"bad count for {site}")
        out[site] = n
    return gid, out


@dataclass
class PeerTable:
    """Latest counts per peer gateway, with their receive time (the reader's clock)."""

    own_id: str
    peer_ttl_s: float = 1.0
    peers: dict[str, tuple[float, dict[str, int]]] = field(default_factory=dict)

    def update(self, gateway_id: str, counts: dict[str, int], now: float) -> bool:
        """Record a peer's message; False for our own (pub/sub echoes it back)."""
        if gateway_id == self.own_id:
            return False
        self.peers[gateway_id] = (now, counts)
        return True

    def totals(self, now: float) -> dict[str, int]:
        """Sum over live peers; silent ones are forgotten."""
        self.peers = {g: v for g, v in self.peers.items() if now - v[0] <= self.peer_ttl_s}
        out: dict[str, int] = {}
        for _, counts in self.peers.values():
            for site, n in counts.items():
                out[site] = out.get(site, 0) + n
        return out
