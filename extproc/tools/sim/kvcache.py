"""KV blocks of one replica, with vLLM V1's automatic prefix cache. Pure bookkeeping, no clock.

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

from functools import partial
from itertools import islice, takewhile
from operator import is_not
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

    The free queue costs no work per block beyond a list append: it is the never-used blocks
    ``[_fresh, num_blocks)`` in id order (nothing is built for them up front), then ``_fq``, an
    append-only list of freed blocks read from ``_head``. An entry is live while its block is free and it
    is the block's latest entry (``_qpos``); a block taken by a cache hit simply leaves its entry dead,
    and allocation skips dead entries. That is the order one LRU queue of all blocks would have (checked
    against the OrderedDict manager it replaced, ``tests/sim/reference_kvcache.py``, operation for
    operation).
    """

    __slots__ = ("num_blocks", "block_size", "enable_caching", "num_free", "_ref", "_hash", "_cached", "_fresh",
                 "_fq", "_qpos", "_head", "_base")

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
            # The queue's head: blocks never used yet, in id order (they hold no hash and come before
            # every freed block, as in a queue that started as 0..num_blocks-1).
            self._fresh = 0
            # Freed blocks in the order they were freed; entry i (global index _base + i) is live while
            # its block is free and _qpos[block] == _base + i. _head: the first entry not yet consumed.
            self._fq: list[int] = []
            self._qpos: list[int] = [-1] * num_blocks
            self._head = 0
            self._base = 0

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
        if not self.enable_caching or not self._cached:
            return []
        limit = min(len(block_hashes), (num_tokens - 1) // self.block_size)
        if limit <= 0:
            return []
        # A block id is never None: the chain stops at the first hash not cached.
        return list(takewhile(_NOT_NONE, map(self._cached.get, islice(block_hashes, limit))))

    def can_admit(self, hit: Sequence[int], num_new_blocks: int) -> bool:
        """Whether a request sharing ``hit`` and needing ``num_new_blocks`` more fits now.

        Hit blocks nobody references are counted in ``num_free``; taking them uses that free space up,
        as vLLM's ``allocate_slots`` accounts them.
        """
        if not hit:
            return num_new_blocks <= self.num_free
        evictable = list(map(self._ref.__getitem__, hit)).count(0)
        return num_new_blocks + evictable <= self.num_free

    # ---- changes ----------------------------------------------------------------------------------
    def take(self, hit: Sequence[int], num_new_blocks: int) -> bool:
        """``can_admit`` and, when it holds, ``touch``, reading each hit block's count once (admission)."""
        if not hit:
            return num_new_blocks <= self.num_free
        ref = self._ref
        rs = list(map(ref.__getitem__, hit))
        evictable = rs.count(0)
        if num_new_blocks + evictable > self.num_free:
            return False
        for b, r in zip(hit, rs):
            ref[b] = r + 1
        self.num_free -= evictable
        return True

    def touch(self, hit: Sequence[int]) -> None:
        """Take a reference on cache-hit blocks (out of the free queue if nobody held them: their queue
        entries die with it)."""
        ref = self._ref
        taken = 0
        for b in hit:
            r = ref[b]
            if not r:
                taken += 1
            ref[b] = r + 1
        self.num_free -= taken

    def allocate(self, blocks: list[int], n: int) -> None:
        """Append ``n`` fresh blocks to ``blocks`` (LRU head first, evicting the hashes they held)."""
        if n > self.num_free:
            raise ValueError(f"cannot allocate {n} blocks, {self.num_free} free")
        if n <= 0:
            return
        self.num_free -= n
        if not self.enable_caching:
            return
        ref = self._ref
        f = self._fresh
        k = min(n, self.num_blocks - f)
        if k:
            # Never used: no hash to evict, reference count 0 -> 1.
            self._fresh = f + k
            ref[f:f + k] = [1] * k
            blocks.extend(range(f, f + k))
            n -= k
            if not n:
                return
        fq = self._fq
        qpos = self._qpos
        i = self._head
        g = self._base + i
        hashes = self._hash
        cached = self._cached
        append = blocks.append
        while n:
            b = fq[i]
            if not ref[b] and qpos[b] == g:  # a live entry (num_free says there are enough)
                h = hashes[b]
                if h is not None:  # reusing the memory evicts what it held
                    if cached.get(h) == b:
                        del cached[h]
                    hashes[b] = None
                ref[b] = 1
                append(b)
                n -= 1
            i += 1
            g += 1
        self._head = i
        if i > 4096 and i > len(fq) >> 1:  # drop the consumed entries now and then (amortised O(1))
            del fq[:i]
            self._base += i
            self._head = 0

    def cache_blocks(self, blocks: Sequence[int], block_hashes: Sequence[Hashable], start: int, end: int) -> int:
        """Register ``blocks[start:end]`` (now full) under their hashes; return ``end``.

        A hash already cached under another block (two requests computed the same prefix at once) keeps
        the first block; the duplicate stays uncached and is simply freed later.
        """
        if not self.enable_caching:
            return end
        cached = self._cached
        hashes = self._hash
        for h, b in zip(block_hashes[start:end], blocks[start:end]):
            if h not in cached:
                cached[h] = b
                hashes[b] = h
        return end

    def free(self, blocks: Sequence[int], count: int) -> None:
        """Drop a request's references: ``blocks`` (caching on) or ``count`` anonymous blocks (off)."""
        if not self.enable_caching:
            self.num_free += count
            return
        ref = self._ref
        fq = self._fq
        qpos = self._qpos
        g = self._base + len(fq)
        g0 = g
        append = fq.append
        for b in reversed(blocks):  # the request's last block goes first: it is evicted first
            r = ref[b] - 1
            ref[b] = r
            if not r:
                append(b)
                qpos[b] = g
                g += 1
        self.num_free += g - g0

    # ---- for tests and invariants -----------------------------------------------------------------
    def free_order(self) -> list[int]:
        """Free block ids, next to be reused first."""
        if not self.enable_caching:
            return []
        ref, qpos, base = self._ref, self._qpos, self._base
        live = [b for i, b in enumerate(self._fq[self._head:], base + self._head) if not ref[b] and qpos[b] == i]
        return [*range(self._fresh, self.num_blocks), *live]

    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def cached_block(self, block_hash: Hashable) -> int | None:
        return self._cached.get(block_hash) if self.enable_caching else None


_NOT_NONE = partial(is_not, None)
