"""A gateway's approximate prefix index (GIE's idea): per site, an LRU of the prompt block hashes this
gateway sent there. A request's leading blocks found in a site's LRU are probably in that site's prefix
cache. It sees only this gateway's own traffic, as GIE's does."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from extproc.gateway.config.schema import GatewayConfig

# vLLM's KV block and the gateway's prefix block: 16 tokens (64 characters).
BLOCK_TOKENS = 16


class _HasConfig(Protocol):
    config: GatewayConfig


def kv_sized_capacity(env: _HasConfig, default: int) -> dict[str, int]:
    """Blocks per site: its replicas' KV cache in 16-token blocks where the config knows it, else
    `default`."""
    out: dict[str, int] = {}
    for s in env.config.sites:
        kv = s.speed.kv_cache_tokens if s.speed is not None else None
        out[s.name] = max(1, s.replicas * kv // BLOCK_TOKENS) if kv else default
    return out


class PrefixIndex:
    def __init__(self, capacity_per_site: int | dict[str, int]) -> None:
        self._cap = capacity_per_site
        self._lru: dict[str, OrderedDict[int, None]] = {}

    def capacity(self, site: str) -> int:
        c = self._cap
        return c if isinstance(c, int) else c.get(site, 31_250)

    def matched(self, site: str, blocks: Sequence[int]) -> int:
        """How many of the leading blocks the site holds (the chain stops at the first miss)."""
        lru = self._lru.get(site)
        if not lru or not blocks:
            return 0
        if blocks[-1] in lru and blocks[0] in lru:
            # The common repeat (the same prompt prefix again): no walk. A chain goes in in order, so a
            # present first and last block almost always mean the blocks between are there too.
            return len(blocks)
        n = 0
        for b in blocks:
            if b not in lru:
                break
            n += 1
        return n

    def blocks(self, site: str) -> list[int]:
        """The site's blocks, least recently sent first."""
        return list(self._lru.get(site, ()))

    def add(self, site: str, blocks: Sequence[int]) -> None:
        if not blocks:
            return
        lru = self._lru.setdefault(site, OrderedDict())
        # The same LRU order as `lru[b] = None; lru.move_to_end(b)` block by block (each block, in turn, to
        # the end), with both loops in C: a RAG prompt is ~200 blocks, and this runs per decision.
        # (Both return None, every value here being None: any() runs each map to its end.)
        any(map(lru.setdefault, blocks))
        any(map(lru.move_to_end, blocks))
        cap = self.capacity(site)
        while len(lru) > cap:
            lru.popitem(last=False)
