"""The KV block manager as it was before its bulk operations (one Python step per block, the whole free
queue in one OrderedDict from the start): the oracle `test_kvcache.py` checks the engine's manager
against, operation for operation, and the block manager of `reference_engine.py`.

KV blocks of one replica, with vLLM V1's automatic prefix cache. Pure bookkeeping, no clock.

How vLLM V1 does it (``vllm/v1/core/block_pool.py``, ``kv_cache_manager.py``), and so how this does:

* The KV cache is ``num_blocks`` blocks of ``block_size`` (16) tokens. A request owns a list of block ids.
* A *full* block of the prompt is identified by a hash chain: block i's hash covers block i-1's hash and
  block i's token ids (:func:`hash_blocks`), so equal hashes mean equal prefixes. Partial blocks are
  never cached.
* Blocks carry a reference count. Blocks with count 0 sit in one free queue in LRU order; a freed
  request's blocks go to the tail in *reverse* order (its last blocks are the least likely to be shared,
  so they are evicted first). Allocation pops the head; if that block still holds a cached hash, the hash
  is evicted then (so a free block stays a cache hit until its memory is actually reused).
* A new request looks up the longest chain of cached blocks from its first block, at most
  ``(num_tokens - 1) // block_size`` blocks: the last prompt token is always computed, because the step
  needs its logits. Hit blocks are shared (count + 1, out of the free queue) and their tokens skip prefill.
* KV usage, as vLLM reports it, is ``1 - free / total``: cached blocks nobody references count as free.

With ``enable_caching=False`` the manager only counts blocks (no ids, no hashes), as the engine did
before prefix caching existed; that path is the cheapest one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

# Parent of a prompt's first block. A constant (vLLM draws a random one per process unless
# PYTHONHASHSEED is set): here equal prompts must hash alike across sites and processes.
ROOT_HASH = 0x6169_6772_6964  # "aigrid"


def hash_blocks(token_ids: Sequence[int], block_size: int = 16, parent: int = ROOT_HASH) -> list[int]:
    """The hash chain of the full blocks of ``token_ids``: ``h[i] = hash((h[i-1], *tokens of block i))``.

    Python's ``hash`` of a tuple of ints is deterministic across processes (only str/bytes hashing is
    salted), fast, and 64-bit; a simulator needs no cryptographic strength here. A trailing partial
    block gets no hash (it is never cached). ``parent`` continues an existing chain.
    """
    out: list[int] = []
    h = parent
    full = len(token_ids) - len(token_ids) % block_size
    for i in range(0, full, block_size):
        h = hash((h, *token_ids[i : i + block_size]))
        out.append(h)
    return out


class KVCacheManager:
    """Block accounting and prefix cache of one replica.

    The engine reads ``num_free`` (a plain int) on its hot path and calls the methods only when a
    request's block count changes (once per 16 decode tokens), so the cost per step stays flat.
    """

    __slots__ = ("num_blocks", "block_size", "enable_caching", "num_free", "_ref", "_hash", "_cached", "_free_q")

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True) -> None:
        if num_blocks < 0 or block_size < 1:
            raise ValueError("num_blocks must be >= 0 and block_size >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.num_free = num_blocks  # blocks with reference count 0 (cached-and-evictable included)
        if enable_caching:
            self._ref: list[int] = [0] * num_blocks
            self._hash: list[Hashable | None] = [None] * num_blocks
            self._cached: dict[Hashable, int] = {}  # block hash -> block id holding it
            # Free blocks, head = least recently freed (next to be reused or evicted).
            self._free_q: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    # ---- lookups ----------------------------------------------------------------------------------
    @property
    def usage(self) -> float:
        """vLLM's ``kv_cache_usage_perc``: share of blocks referenced by some request (0..1)."""
        return (self.num_blocks - self.num_free) / self.num_blocks if self.num_blocks else 0.0

    @property
    def num_cached_blocks(self) -> int:
        """Blocks currently holding a cached hash (referenced or free)."""
        return len(self._cached) if self.enable_caching else 0

    def lookup(self, block_hashes: Sequence[Hashable], num_tokens: int) -> list[int]:
        """Block ids of the longest cached prefix of a request with ``num_tokens`` tokens (no side effects)."""
        if not self.enable_caching:
            return []
        limit = min(len(block_hashes), (num_tokens - 1) // self.block_size)
        cached = self._cached
        hit: list[int] = []
        for i in range(limit):
            b = cached.get(block_hashes[i])
            if b is None:
                break
            hit.append(b)
        return hit

    def can_admit(self, hit: Sequence[int], num_new_blocks: int) -> bool:
        """Whether a request sharing ``hit`` and needing ``num_new_blocks`` more fits now.

        Hit blocks nobody references are counted in ``num_free``; taking them uses that free space up,
        as vLLM's ``allocate_slots`` accounts them.
        """
        if not hit:
            return num_new_blocks <= self.num_free
        ref = self._ref
        evictable = sum(1 for b in hit if ref[b] == 0)
        return num_new_blocks + evictable <= self.num_free

    # ---- changes ----------------------------------------------------------------------------------
    def touch(self, hit: Sequence[int]) -> None:
        """Take a reference on cache-hit blocks (out of the free queue if nobody held them)."""
        ref = self._ref
        q = self._free_q
        for b in hit:
            if ref[b] == 0:
                del q[b]
                self.num_free -= 1
            ref[b] += 1

    def allocate(self, blocks: list[int], n: int) -> None:
        """Append ``n`` fresh blocks to ``blocks`` (LRU head first, evicting the hashes they held)."""
        if n > self.num_free:
            raise ValueError(f"cannot allocate {n} blocks, {self.num_free} free")
        self.num_free -= n
        if not self.enable_caching:
            return
        pop = self._free_q.popitem
        new = [pop(False)[0] for _ in range(n)]
        ref = self._ref
        if self._cached:  # something may be cached: evict what the reused blocks held
            hashes = self._hash
            cached = self._cached
            for b in new:
                h = hashes[b]
                if h is not None:
                    if cached.get(h) == b:
                        del cached[h]
                    hashes[b] = None
                ref[b] = 1
        else:
            for b in new:
                ref[b] = 1
        blocks.extend(new)

    def cache_blocks(self, blocks: Sequence[int], block_hashes: Sequence[Hashable], start: int, end: int) -> int:
        """Register ``blocks[start:end]`` (now full) under their hashes; return ``end``.

        A hash already cached under another block (two requests computed the same prefix at once) keeps
        the first block; the duplicate stays uncached and is simply freed later.
        """
        if not self.enable_caching:
            return end
        cached = self._cached
        hashes = self._hash
        for i in range(start, end):
            h = block_hashes[i]
            if h not in cached:
                b = blocks[i]
                cached[h] = b
                hashes[b] = h
        return end

    def free(self, blocks: Sequence[int], count: int) -> None:
        """Drop a request's references: ``blocks`` (caching on) or ``count`` anonymous blocks (off)."""
        if not self.enable_caching:
            self.num_free += count
            return
        ref = self._ref
        q = self._free_q
        freed = 0
        for b in reversed(blocks):
            r = ref[b] - 1
            ref[b] = r
            if not r:
                q[b] = None
                freed += 1
        self.num_free += freed

    # ---- for tests and invariants -----------------------------------------------------------------
    def free_order(self) -> list[int]:
        """Free block ids, next to be reused first."""
        return list(self._free_q) if self.enable_caching else []

    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def cached_block(self, block_hash: Hashable) -> int | None:
        return self._cached.get(block_hash) if self.enable_caching else None
