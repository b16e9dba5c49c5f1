"""Conversation → site memory for KV-cache reuse: bounded LRU with a TTL. No I/O; the clock is passed in."""

from __future__ import annotations

from collections import OrderedDict


class AffinityTable:
    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str | None, now: float) -> str | None:
        if key is None or self._max == 0:
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        site, at = hit
        if now - at > self._ttl:
            del self._entries[key]
            return None
        return site

    def put(self, key: str | None, site: str, now: float) -> None:
        if key is None or self._max == 0:
            return
        self._entries[key] = (site, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
