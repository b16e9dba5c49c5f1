"""Responses API conversation chains: which conversation a `previous_response_id` continues.

A Responses API client may send only the new turn and `previous_response_id`: nothing in the body is the
same from one turn to the next, so the conversation key (affinity, the keyed draw) would change every
turn and the conversation would lose its site, its KV cache and, with `store: true` on vLLM, the stored
response itself. The response side (where usage is counted: the observing ext_proc filter or the access
log) reads each response's id and tells this table which conversation it belongs to; the next turn's
`previous_response_id` then finds the key of the chain's first turn.

Bounded (LRU, `max_entries`) and forgetful (`ttl_s`): a table per gateway process, fed by the responses
that process observed. Replicas do not share it: where turns of one conversation spread over replicas,
clients name the conversation (`x-aigrid-conversation`, or the body's `prompt_cache_key` / `user`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ResponseChains:
    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._keys: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.learned = 0
        self.found = 0
        self.missed = 0

    def learn(self, response_id: str, key: str) -> None:
        """`response_id` was produced by a turn of the conversation `key`."""
        if not response_id or not key:
            return
        self._keys[response_id] = (key, self._clock())
        self._keys.move_to_end(response_id)
        self.learned += 1
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)

    def get(self, response_id: str) -> str | None:
        """The conversation key the response belongs to, or None (never seen, forgotten or too old)."""
        entry = self._keys.get(response_id)
        if entry is None or self._clock() - entry[1] > self.ttl_s:
            if entry is not None:
                del self._keys[response_id]
            self.missed += 1
            return None
        self.found += 1
        return entry[0]

    def __len__(self) -> int:
        return len(self._keys)
