"""The engine model: a vLLM-style continuous-batching scheduler over plain data, with no clock of its own.

One ``EngineCore`` stands for one model replica (``tp`` GPUs). Callers drive it step by step:

    plan = core.schedule(now)          # decide what the GPU computes this step (admission, chunks, KV)
    end = plan.end                     # now + the step's duration, from the roofline in profiles.py
    emitted = core.commit(plan, end)   # the step's results: one token per sequence that sampled

Whoever owns the clock decides when ``end`` is: ``VirtualSim`` (``virtual.py``) jumps a virtual clock (tests and
the saturation study run thousands of steps in milliseconds, deterministically); the replica loop in
``replica.py`` sleeps until ``end`` in real time; the grid twin asks for several steps at once
(``schedule(now, max_steps=N)``: a *decode stretch*, see below). The scheduling rules follow vLLM V1:

* running sequences first, in admission order: a decoding sequence takes one token of the step's token
  budget, a sequence still in prefill takes a chunk of its remaining prompt (chunked prefill);
* then waiting requests, first come first served, while the token budget, ``max_num_seqs`` and free
  KV blocks allow (a request needs blocks for the chunk it computes now, not for its whole prompt);
* when a running sequence needs a KV block and none is free, the most recently admitted sequence is
  preempted (its blocks freed, put back at the head of the queue, recomputed later), as vLLM's
  recompute preemption does; no admissions happen in a step that preempted.

Prefix caching (vLLM V1's automatic prefix caching, on by default; ``kvcache.py`` holds the block pool):

* a caller that wants cache hits gives each request ``block_hashes``, the hash chain of its prompt's
  full 16-token blocks (``kvcache.hash_blocks(token_ids)``; any hashables with the chain property do:
  equal hash at block i <=> equal tokens in blocks 0..i). ``None`` (the default) = never looked up,
  never cached, costs nothing extra;
* when a request is admitted with nothing computed (new, or back after a preemption), the longest run of
  cached blocks from its start is shared and those tokens skip prefill (at most ``(tokens - 1) // 16``
  blocks: the last prompt token is always computed). ``req.num_cached_tokens`` is the hit of its first
  admission (what ``usage.prompt_tokens_details.cached_tokens`` reports);
* counters, in tokens, as vLLM's ``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``:
  ``stats.prefix_cache_queries`` (+ the request's tokens at each admission of a request with
  ``block_hashes``) and ``stats.prefix_cache_hits`` (+ the tokens found cached);
* freed blocks stay cached (LRU over free blocks) until their memory is reused; ``kv_usage`` counts only
  referenced blocks, as vLLM's does. ``EngineCore(hw, prefix_caching=False)`` (or the profile's
  ``enable_prefix_caching: false``) turns it off; requests' hashes are then ignored.

How a step stays cheap with hundreds of sequences running (the rules above are unchanged by it; the
oracle test, ``tests/sim/test_engine_oracle.py``, checks step for step against the engine that walked
every sequence every step):

* the *cohort*: every decoding sequence takes exactly one token per step, so they are kept as one
  group with a shared step counter ``G`` (a member's computed and generated tokens are its values at
  joining plus ``G`` minus the ``G`` it joined at), an aggregate of their computed tokens (the step's
  KV-read term), a count of members per position within a KV block (how many open a new block this
  step), a heap of the step each member finishes at, and one pool of the blocks they opened while
  decoding (uncached, so interchangeable). Prefilling sequences stay explicit. A step then costs
  O(prefilling + finishing sequences), not O(running);
* whenever a step is not that simple (a preemption, an abort, a token budget that runs out before a
  decoding sequence's turn), the cohort is laid out as explicit sequences for that one step and the
  original per-sequence algorithm runs;
* a *decode stretch*: with nothing prefilling and nothing admissible, successive steps differ only in
  their KV-read term, so ``schedule(now, max_steps=N)`` plans up to N of them at once, ending at the
  first step a member finishes in or KV would run out. ``truncate(plan, t)`` cuts it at the step in
  progress at ``t`` (a request arrived), ``kv_usage_at(plan, t)`` says what KV usage a report taken
  at ``t`` would read. Step times are the same floating-point sums as one step at a time.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Any, Hashable, Sequence

from .kvcache import KVCacheManager
from .profiles import ReplicaHardware
from .stats import EngineStats

WAITING, RUNNING, FINISHED, ABORTED = "waiting", "running", "finished", "aborted"


class SimRequest:
    """One generation request as the engine sees it: token counts only, no text.

    ``num_computed``, ``num_generated``, ``num_blocks`` and ``last_token_time`` are read the same way
    whether the sequence is explicit or a member of its engine's decode cohort (where they are derived
    from the cohort's counter)."""

    __slots__ = (
        "rid", "prompt_len", "max_output", "arrival", "finish_reason", "sink", "status", "first_scheduled",
        "first_token_time", "preemptions", "block_hashes", "num_cached_tokens", "block_ids",
        "num_registered_blocks", "adm", "_computed", "_generated", "_nblocks", "_last", "_core", "_g0",
    )

    def __init__(
        self,
        rid: str,
        prompt_len: int,
        max_output: int,
        arrival: float,
        finish_reason: str = "length",
        sink: Any = None,
        *,
        block_hashes: Sequence[Hashable] | None = None,
    ) -> None:
        self.rid = rid
        self.prompt_len = prompt_len
        self.max_output = max_output  # tokens to generate; the request finishes when it has generated this many
        self.arrival = arrival
        self.finish_reason = finish_reason  # reported when max_output is reached ("stop" for a natural EOS)
        self.sink = sink  # owned by the adapter (where tokens go); the engine only hands it back
        self.status = WAITING
        self.first_scheduled: float | None = None
        self.first_token_time: float | None = None
        self.preemptions = 0
        # Prefix caching: the hash chain of the prompt's full blocks (None = not cacheable), the prompt
        # tokens found cached at the first admission, the KV block ids held (a cohort member's blocks
        # opened while decoding are in the cohort's pool), and how many of them are registered.
        self.block_hashes = block_hashes
        self.num_cached_tokens = 0
        self.block_ids: list[int] = []
        self.num_registered_blocks = 0
        self.adm = 0  # admission order (a running sequence's place in vLLM's running list)
        self._computed = 0
        self._generated = 0
        self._nblocks = 0
        self._last: float | None = None
        self._core: EngineCore | None = None  # set while a cohort member
        self._g0 = 0

    # -- values that a cohort member derives from its engine's counter ---------------------------------
    @property
    def num_computed(self) -> int:
        """Tokens whose KV is in the cache."""
        c = self._core
        return self._computed if c is None else self._computed + c._g - self._g0

    @num_computed.setter
    def num_computed(self, v: int) -> None:
        if self._core is not None:
            raise AttributeError("a decode-cohort member's progress is its engine's")
        self._computed = v

    @property
    def num_generated(self) -> int:
        c = self._core
        return self._generated if c is None else self._generated + c._g - self._g0

    @property
    def num_blocks(self) -> int:
        c = self._core
        if c is None:
            return self._nblocks
        return -(-(self.num_computed + c._pending) // c.block_size)

    @property
    def last_token_time(self) -> float | None:
        c = self._core
        return self._last if c is None or c._coh_last is None else c._coh_last

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_generated

    @property
    def finished(self) -> bool:
        return self.status in (FINISHED, ABORTED)

    def __repr__(self) -> str:
        return (f"SimRequest({self.rid!r}, prompt={self.prompt_len}, out={self.max_output}, "
                f"computed={self.num_computed}, generated={self.num_generated}, {self.status})")


class StepPlan:
    """What one engine step (or a decode stretch of ``steps`` steps) computes.

    ``items`` pairs each explicitly scheduled request with its token count; ``cohort`` decoding sequences
    take one token each on top. ``ends[i]`` is the absolute end time of step i+1 (``end`` the last).
    (A slotted class rather than a dataclass: the twin makes one per event.)"""

    __slots__ = ("items", "cohort", "num_tokens", "num_prefill_tokens", "num_decode", "kv_read_tokens",
                 "attn_ctx_sum", "preempted", "duration", "start", "steps", "durations", "ends", "needs", "general")

    def __init__(self, start: float = 0.0, general: bool = False) -> None:
        self.items: list[tuple[SimRequest, int]] = []
        self.cohort = 0
        self.num_tokens = 0
        self.num_prefill_tokens = 0
        self.num_decode = 0
        self.kv_read_tokens = 0
        self.attn_ctx_sum = 0
        self.preempted = 0
        self.duration = 0.0  # of the first step
        self.start = start
        self.steps = 1
        self.durations: list[float] = []
        self.ends: list[float] = []
        # Stretch only: the KV blocks each step after the first opens, and the cumulative sums.
        self.needs: list[int] = []
        # True when this step runs the per-sequence algorithm (cohort laid out as explicit sequences).
        self.general = general

    @property
    def empty(self) -> bool:
        return not self.items and not self.cohort

    @property
    def end(self) -> float:
        return self.ends[self.steps - 1] if self.ends else self.start + self.duration

    def __repr__(self) -> str:
        return (f"StepPlan(start={self.start}, steps={self.steps}, cohort={self.cohort}, items={len(self.items)}, "
                f"tokens={self.num_tokens}, duration={self.duration})")


class EngineCore:
    """Continuous-batching scheduler and KV block accounting for one replica."""

    def __init__(self, hw: ReplicaHardware, *, prefix_caching: bool | None = None) -> None:
        self.hw = hw
        self.block_size = hw.engine.block_size
        self.total_blocks = hw.num_blocks
        self.prefix_caching = hw.engine.enable_prefix_caching if prefix_caching is None else prefix_caching
        self.kv = KVCacheManager(hw.num_blocks, hw.engine.block_size, self.prefix_caching)
        self.max_num_seqs = hw.engine.max_num_seqs
        self._max_len = hw.effective_max_model_len  # a derived property: computed once, not per request
        self.max_batched = hw.engine.max_num_batched_tokens
        self.waiting: deque[SimRequest] = deque()
        # Running sequences in admission order (a dict: O(1) removal, order kept).
        self._running: dict[SimRequest, None] = {}
        # Running sequences outside the cohort (prefilling), in admission order.
        self._explicit: list[SimRequest] = []
        self.stats = EngineStats()
        self._aborts = 0
        self._adm = 0
        # The decode cohort (see the module docstring).
        self._g = 0  # cohort steps so far
        self._pending = 0  # 1 while a scheduled, uncommitted step includes the cohort
        self._coh_n = 0
        self._coh_c = 0  # sum of members' computed tokens
        self._coh_last: float | None = None  # members' shared last token time (None: they differ)
        self._phase = [0] * self.block_size  # members per (computed - g0) mod block_size
        self._finish_at: list[tuple[int, int, SimRequest]] = []  # (G it finishes at, adm, member)
        self._newest: list[tuple[int, SimRequest]] = []  # max-heap of members' adm (negated), lazy
        self._pool: list[int] = []  # block ids members opened while decoding (uncached)
        self._pool_n = 0  # their count (ids are kept only with prefix caching on)

    # ---- inputs -------------------------------------------------------------------------------------
    def add(self, req: SimRequest) -> None:
        if req.prompt_len < 1 or req.max_output < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        if req.prompt_len + req.max_output > self._max_len:
            raise ValueError("request exceeds max_model_len")  # the API layer rejects these first
        if req.block_hashes is not None and len(req.block_hashes) > req.prompt_len // self.block_size:
            raise ValueError("block_hashes has more entries than the prompt has full blocks")
        req.status = WAITING
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        """Cancel a request (client went away, stop string hit). Its KV is freed at the next schedule."""
        if req.finished:
            return
        req.status = ABORTED
        self.stats.finished["abort"] += 1
        self._aborts += 1

    # ---- state --------------------------------------------------------------------------------------
    @property
    def running(self) -> list[SimRequest]:
        """Running sequences in admission order (a copy)."""
        return list(self._running)

    @property
    def has_work(self) -> bool:
        return bool(self._running) or bool(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def free_blocks(self) -> int:
        """KV blocks no request references (cached-but-free blocks included: they are evictable)."""
        return self.kv.num_free

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use (vLLM's ``kv_cache_usage_perc`` is this fraction, 0..1)."""
        return self.kv.usage

    def kv_usage_at(self, plan: StepPlan | None, t: float) -> float:
        """KV usage as a report taken at ``t`` reads it while ``plan`` runs: a stretch's later steps open
        their blocks when they start, so the steps begun by ``t`` count."""
        if plan is None or plan.steps <= 1 or not plan.needs:
            return self.kv.usage
        # Steps 2..i+1 have begun by t when step i has ended at or before t.
        i = min(bisect_right(plan.ends, t, 0, plan.steps), plan.steps - 1)
        extra = plan.needs[i - 1] if i >= 1 else 0
        total = self.kv.num_blocks
        return (total - self.kv.num_free + extra) / total if total else 0.0

    # ---- the cohort ---------------------------------------------------------------------------------
    def _join(self, r: SimRequest, t: float | None) -> None:
        """A sequence whose next step computes one token (it finished its prefill) joins the cohort."""
        g = self._g
        r._g0 = g
        r._core = self
        c = r._computed
        self._coh_n += 1
        self._coh_c += c
        self._phase[(c - g) % self.block_size] += 1
        heapq.heappush(self._finish_at, (g + r.max_output - r._generated, r.adm, r))
        heapq.heappush(self._newest, (-r.adm, r))
        if self._coh_n == 1:
            self._coh_last = t
        elif self._coh_last != t:
            self._coh_last = None

    def _leave(self, r: SimRequest) -> None:
        """Fold a member's progress back into its own fields and hand it its pool blocks."""
        g = self._g
        d = g - r._g0
        c = r._computed + d
        self._phase[(r._computed - r._g0) % self.block_size] -= 1
        self._coh_n -= 1
        self._coh_c -= c
        last = r.last_token_time
        nb = -(-(c + self._pending) // self.block_size)
        share = nb - len(r.block_ids) if self.prefix_caching else nb - r._nblocks
        if self.prefix_caching:
            pool = self._pool
            if share > 0:
                # As popping them one by one: the pool's last blocks, last first.
                r.block_ids.extend(pool[:-share - 1:-1])
                del pool[-share:]
        self._pool_n -= share
        r._computed = c
        r._generated += d
        r._nblocks = nb
        r._last = last
        r._core = None
        if self._coh_n == 0:
            self._finish_at.clear()
            self._newest.clear()
            self._coh_last = None

    def _newest_member_adm(self) -> int:
        h = self._newest
        while h and h[0][1]._core is not self:
            heapq.heappop(h)
        return -h[0][0] if h else -1

    def _dissolve(self) -> None:
        """Lay the cohort out as explicit sequences (for a step the per-sequence algorithm runs)."""
        if not self._coh_n:
            return
        for r in self._running:
            if r._core is self:
                self._leave(r)
        self._explicit = list(self._running)
        self._finish_at.clear()
        self._newest.clear()
        self._coh_last = None

    def _rebuild(self, t: float) -> None:
        """After a per-sequence step: decoding sequences form the cohort again."""
        keep: list[SimRequest] = []
        for r in self._running:
            if r._core is None and r._generated >= 1 and r._computed == r.prompt_len + r._generated - 1:
                self._join(r, r._last)
            else:
                keep.append(r)
        self._explicit = keep

    # ---- KV of explicit sequences -------------------------------------------------------------------
    def _release(self, r: SimRequest) -> None:
        if r._core is self:
            self._leave(r)
        self.kv.free(r.block_ids, r._nblocks)
        r.block_ids = []
        r._nblocks = 0
        r.num_registered_blocks = 0

    def _grow(self, r: SimRequest, need: int, computed_after: int) -> None:
        """Give ``r`` ``need`` more blocks; register its prompt blocks that are full after this step."""
        kv = self.kv
        if need > 0:
            kv.allocate(r.block_ids, need)
            r._nblocks += need
        hashes = r.block_hashes
        if hashes is not None and r.num_registered_blocks < len(hashes) and self.prefix_caching:
            full = min(len(hashes), computed_after // self.block_size)
            if full > r.num_registered_blocks:
                r.num_registered_blocks = kv.cache_blocks(r.block_ids, hashes, r.num_registered_blocks, full)

    def _preempt(self, victim: SimRequest) -> None:
        self._release(victim)
        victim._computed = 0  # recompute preemption: prompt and generated tokens are prefilled again
        victim.status = WAITING
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)

    def _admit(self, plan: StepPlan, budget: int, now: float) -> int:
        """Waiting requests, first come first served, while the budget, max_num_seqs and KV allow."""
        waiting = self.waiting
        kv = self.kv
        bs = self.block_size
        caching = self.prefix_caching
        stats = self.stats
        items = plan.items
        running = self._running
        explicit = self._explicit
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            r = waiting[0]
            hashes = r.block_hashes
            # A waiting request has nothing computed (new, or preempted: recompute from scratch).
            ntok = r.prompt_len + r._generated
            hit = kv.lookup(hashes, ntok) if caching and hashes is not None else []
            cached = len(hit) * bs
            n = min(ntok - cached, budget)
            need = (cached + n + bs - 1) // bs - len(hit)
            if not kv.take(hit, need):  # can_admit, then touch the hit blocks
                break  # head-of-line waits for KV space, as in vLLM (FCFS)
            waiting.popleft()
            if hit:
                r.block_ids = hit
                r._nblocks = len(hit)
                r.num_registered_blocks = len(hit)
                r._computed = cached
            if caching and hashes is not None:
                # Counted once per admission (vLLM counts each lookup, also a head-of-line retry).
                stats.prefix_cache_queries += ntok
                stats.prefix_cache_hits += cached
            self._grow(r, need, cached + n)
            r.status = RUNNING
            if r.first_scheduled is None:
                r.first_scheduled = now
                r.num_cached_tokens = cached
                stats.queue.observe(now - r.arrival)
            self._adm += 1
            r.adm = self._adm
            running[r] = None
            explicit.append(r)
            items.append((r, n))
            budget -= n
        return budget

    # ---- one step -----------------------------------------------------------------------------------
    def schedule(self, now: float, max_steps: int = 1) -> StepPlan:
        """Choose this step's work and allocate its KV blocks. Pure bookkeeping; no time passes.

        ``max_steps`` > 1 lets a decode-only step become a stretch of up to that many steps (see the
        module docstring); the caller then commits at ``plan.end`` or truncates it."""
        plan = self._fast(now) if not self._aborts else None
        if plan is None:
            plan = self._general(now)
        elif max_steps > 1 and not plan.items and plan.cohort:
            self._stretch(plan, max_steps)
        return plan

    def _fast(self, now: float) -> StepPlan | None:
        """The step with the cohort as one group, or None when this step needs the per-sequence rules."""
        budget = self.max_batched
        b = self._coh_n
        bs = self.block_size
        if b > budget:
            return None  # the budget runs out among decoding sequences
        explicit = self._explicit
        # Members must precede every explicit sequence in running order: then the budget is consumed by
        # the members first, and KV blocks are opened in running order, exactly as the per-sequence walk.
        if b and explicit and self._newest_member_adm() > explicit[0].adm:
            return None
        kv = self.kv
        need_dec = self._phase[(-self._g) % bs] if b else 0
        used = b
        need_total = need_dec
        chunks: list[tuple[SimRequest, int, int]] = []
        for r in explicit:
            if used >= budget:
                break  # the rest get nothing this step, as in vLLM
            c0 = r._computed
            n = r.prompt_len + r._generated - c0
            if used + n > budget:
                n = budget - used  # chunked prefill: the rest of the prompt goes in later steps
            need = (c0 + n + bs - 1) // bs - r._nblocks
            chunks.append((r, n, need))
            used += n
            if need > 0:
                need_total += need
        if need_total > kv.num_free:
            return None  # a preemption: the per-sequence rules choose its victims
        plan = StepPlan(start=now)
        items = plan.items
        if need_dec:
            kv.allocate(self._pool if self.prefix_caching else [], need_dec)
            self._pool_n += need_dec
        for r, n, need in chunks:
            if need > 0 or (r.block_hashes is not None and r.num_registered_blocks < len(r.block_hashes)):
                self._grow(r, need, r._computed + n)
            items.append((r, n))
        if budget - used > 0:
            self._admit(plan, budget - used, now)
        kv_read = self._coh_c
        attn = self._coh_c + b
        prefill = 0
        decode = b
        for r, n in items:
            c0 = r._computed
            kv_read += c0
            attn += n * c0 + n * (n + 1) // 2
            if n == 1 and c0 >= r.prompt_len:
                decode += 1
            else:
                prefill += n
        num_tokens = b + sum(n for _, n in items)
        plan.cohort = b
        self._pending = 1 if b else 0
        plan.num_decode = decode
        plan.num_prefill_tokens = prefill
        plan.num_tokens = num_tokens
        plan.kv_read_tokens = kv_read
        plan.attn_ctx_sum = attn
        n_items = b + len(items)
        plan.duration = self.hw.step_time(num_tokens, kv_read, attn, n_items) if n_items else 0.0
        plan.durations = [plan.duration]
        plan.ends = [now + plan.duration]
        return plan

    def _stretch(self, plan: StepPlan, max_steps: int) -> None:
        """Extend a decode-only step with the steps after it that can only be the same kind: nothing
        prefills, nothing is admissible (the queue is empty, or held back by max_num_seqs or the token
        budget, which a decode-only step does not change), and no member finishes before the last."""
        b = plan.cohort
        if self._coh_last is None:
            return
        if self.waiting and len(self._running) < self.max_num_seqs and b < self.max_batched:
            return  # the queue's head was held back by KV: later steps are decided one at a time
        fa = self._finish_at
        while fa and fa[0][2]._core is not self:
            heapq.heappop(fa)
        g = self._g
        k_max = min(max_steps, fa[0][0] - g)  # the member that finishes first does so in step k_max
        if k_max <= 1:
            return
        bs = self.block_size
        phase = self._phase
        free = self.kv.num_free
        # step_time(b, kv_read, kv_read + b, b) with the terms that do not change within the stretch taken
        # out of the loop: the same operations in the same order, so the same floating-point sums.
        t_linear, kvt, apc, t_comm, t_cpu = self.hw.decode_step_terms(b)
        ends = plan.ends
        durations = plan.durations
        needs = plan.needs
        t = ends[0]
        kv_read = plan.kv_read_tokens
        cum = 0
        for i in range(1, k_max):
            need = phase[(-(g + i)) % bs]
            if need:
                if cum + need > free:
                    break  # that step would preempt: it is decided by the per-sequence rules
                cum += need
            kv_read += b
            x = kv_read + b
            ka = kvt * x
            aa = apc * x
            d = t_linear + (aa if aa > ka else ka) + t_comm + t_cpu
            t = t + d
            durations.append(d)
            ends.append(t)
            needs.append(cum)
        plan.steps = len(ends)

    def truncate(self, plan: StepPlan, t: float) -> None:
        """End a stretch with the step in progress at ``t`` (something arrived that the next step must see)."""
        if plan.steps <= 1:
            return
        i = bisect_left(plan.ends, t, 0, plan.steps)
        plan.steps = min(i + 1, plan.steps)

    def _general(self, now: float) -> StepPlan:
        """The per-sequence rules, with the cohort laid out as explicit sequences."""
        self._dissolve()
        self._purge_aborted()
        plan = StepPlan(start=now, general=True)
        budget = self.max_batched
        bs = self.block_size
        explicit = self._explicit
        items = plan.items
        kv = self.kv
        idx = 0
        while idx < len(explicit) and budget > 0:
            r = explicit[idx]
            c0 = r._computed
            n = r.prompt_len + r._generated - c0
            if n > budget:
                n = budget  # chunked prefill: the rest of the prompt goes in later steps
            need = (c0 + n + bs - 1) // bs - r._nblocks
            self_preempted = False
            while need > kv.num_free:
                victim = explicit.pop()
                del self._running[victim]
                self._preempt(victim)
                plan.preempted += 1
                if victim is r:
                    self_preempted = True
                    break
            if self_preempted:
                break
            if need > 0 or (r.block_hashes is not None and r.num_registered_blocks < len(r.block_hashes)):
                self._grow(r, need, c0 + n)
            items.append((r, n))
            budget -= n
            idx += 1
        if not plan.preempted:
            self._admit(plan, budget, now)
        num_tokens = kv_read = attn = prefill = decode = 0
        for r, n in items:
            c0 = r._computed
            num_tokens += n
            kv_read += c0
            # Token j of the chunk (0-based) attends to c0 + j + 1 positions.
            attn += n * c0 + n * (n + 1) // 2
            if n == 1 and c0 >= r.prompt_len:
                decode += 1
            else:
                prefill += n
        plan.num_tokens = num_tokens
        plan.kv_read_tokens = kv_read
        plan.attn_ctx_sum = attn
        plan.num_prefill_tokens = prefill
        plan.num_decode = decode
        plan.duration = self.hw.step_time(num_tokens, kv_read, attn, len(items)) if items else 0.0
        plan.durations = [plan.duration]
        plan.ends = [now + plan.duration]
        self._pending = 0
        return plan

    def _purge_aborted(self) -> None:
        if not self._aborts:
            return
        self._aborts = 0
        keep: list[SimRequest] = []
        for r in self._explicit:
            if r.status == ABORTED:
                del self._running[r]
                self._release(r)
            else:
                keep.append(r)
        self._explicit = keep
        if any(r.status == ABORTED for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if r.status != ABORTED)

    # ---- results ------------------------------------------------------------------------------------
    def commit(self, plan: StepPlan, t: float, *, events_only: bool = False) -> list[SimRequest]:
        """Apply a finished step (or the steps of a stretch) at time ``t``; return the requests that
        produced a token in its last step, in running order (with ``events_only``: only those whose first
        or last token it was). A request in the list whose ``finished`` is true produced its last token."""
        if plan.general:
            out = self._commit_general(plan, t)
            return [r for r in out if r.first_token_time == t or r.status == FINISHED] if events_only else out
        st = self.stats
        itl = st.itl
        b = plan.cohort
        steps = plan.steps
        if steps > 1:
            # The stretch's steps before the last: every member takes one token in each; the blocks they
            # opened are taken now (nothing else used this replica's KV meanwhile).
            need = plan.needs[steps - 2]
            if need:
                self.kv.allocate(self._pool if self.prefix_caching else [], need)
                self._pool_n += need
            ends = plan.ends
            durations = plan.durations
            prev: float = self._coh_last  # type: ignore[assignment]
            # One itl.observe(end - prev, b) and one busy_seconds += duration per step, inlined: the same
            # floating-point sums in the same order.
            counts = itl.counts
            bounds = itl.bounds
            isum = itl.sum
            busy = st.busy_seconds
            for i in range(steps - 1):
                end = ends[i]
                busy += durations[i]
                v = end - prev
                counts[bisect_left(bounds, v)] += b
                isum += v * b
                prev = end
            itl.sum = isum
            itl.count += b * (steps - 1)
            st.busy_seconds = busy
            st.steps += steps - 1
            st.generation_tokens += b * (steps - 1)
            self._g += steps - 1
            self._coh_c += b * (steps - 1)
            self._coh_last = prev
            plan.duration = durations[steps - 1]
        st.steps += 1
        st.busy_seconds += plan.duration
        finished: list[SimRequest] = []
        firsts: list[SimRequest] = []
        if b:
            last = self._coh_last
            if last is None:
                # Members' previous tokens came at different times (after a per-sequence step): one
                # observation per run of equal gaps, in running order, as the per-sequence commit.
                gap_last: float | None = None
                gap_n = 0
                for r in self._running:
                    if r._core is self:
                        if r._last == gap_last:
                            gap_n += 1
                        else:
                            if gap_n:
                                itl.observe(t - gap_last, gap_n)  # type: ignore[operator]
                            gap_last, gap_n = r._last, 1
                if gap_n:
                    itl.observe(t - gap_last, gap_n)  # type: ignore[operator]
            else:
                itl.observe(t - last, b)
            self._g += 1
            self._coh_c += b
            self._coh_last = t
            st.generation_tokens += b
            fa = self._finish_at
            g = self._g
            while fa and fa[0][0] <= g:
                r = heapq.heappop(fa)[2]
                if r._core is self:
                    finished.append(r)
        self._pending = 0
        # Explicit sequences: prefill chunks and admissions.
        joined: list[SimRequest] = []
        for r, n in plan.items:
            if r.status != RUNNING:
                continue  # aborted while the step ran; blocks are freed at the next schedule
            r._computed += n
            if r._computed < r.prompt_len + r._generated:
                continue  # a prefill chunk that did not reach the end of the prompt
            r._generated += 1
            if r._last is None:
                r.first_token_time = t
                st.ttft.observe(t - r.arrival)
                st.prompt_tokens += r.prompt_len
                firsts.append(r)
            else:
                itl.observe(t - r._last, 1)
            r._last = t
            st.generation_tokens += 1
            if r._generated >= r.max_output:
                finished.append(r)
            else:
                joined.append(r)
        if finished:
            # Freed in running order, as the per-sequence commit walked it.
            finished.sort(key=_adm_of)
            kv = self.kv
            for r in finished:
                if r._core is self:
                    self._leave(r)
                r.status = FINISHED
                r._last = t
                kv.free(r.block_ids, r._nblocks)
                r.block_ids = []
                r._nblocks = 0
                r.num_registered_blocks = 0
                st.finished[r.finish_reason] = st.finished.get(r.finish_reason, 0) + 1
                st.e2e.observe(t - r.arrival)
                del self._running[r]
        for r in joined:
            self._join(r, t)
        if finished or joined:
            self._explicit = [r for r in self._explicit if r.status == RUNNING and r._core is None]
        if events_only:
            if firsts and finished:
                return sorted({*firsts, *finished}, key=_adm_of)
            return finished or firsts
        # Everyone who produced a token this step, in running order (the finished included).
        out = [r for r in self._running if r._core is self]
        if finished:
            out = sorted([*out, *finished], key=_adm_of)
        return out

    def _commit_general(self, plan: StepPlan, t: float) -> list[SimRequest]:
        st = self.stats
        st.steps += 1
        st.busy_seconds += plan.duration
        emitted: list[SimRequest] = []
        any_finished = False
        # Sequences that also produced a token in the previous step share one inter-token gap; observe
        # them with one weighted observation instead of hundreds (keeps the per-step CPU flat).
        same_gap_last: float | None = None
        same_gap_n = 0
        itl = st.itl
        for r, n in plan.items:
            if r.status != RUNNING:
                continue
            r._computed += n
            if r._computed < r.prompt_len + r._generated:
                continue
            r._generated += 1
            last = r._last
            if last is None:
                r.first_token_time = t
                st.ttft.observe(t - r.arrival)
                st.prompt_tokens += r.prompt_len
            elif last == same_gap_last:
                same_gap_n += 1
            else:
                if same_gap_n:
                    itl.observe(t - same_gap_last, same_gap_n)  # type: ignore[operator]
                same_gap_last = last
                same_gap_n = 1
            r._last = t
            st.generation_tokens += 1
            if r._generated >= r.max_output:
                r.status = FINISHED
                self.kv.free(r.block_ids, r._nblocks)
                r.block_ids = []
                r._nblocks = 0
                r.num_registered_blocks = 0
                st.finished[r.finish_reason] = st.finished.get(r.finish_reason, 0) + 1
                st.e2e.observe(t - r.arrival)
                any_finished = True
            emitted.append(r)
        if same_gap_n:
            itl.observe(t - same_gap_last, same_gap_n)  # type: ignore[operator]
        if any_finished:
            for r in emitted:
                if r.status == FINISHED:
                    self._running.pop(r, None)
            self._explicit = [r for r in self._explicit if r.status != FINISHED]
        self._rebuild(t)
        return emitted


def _adm_of(r: SimRequest) -> int:
    return r.adm


# The virtual-clock drivers live in virtual.py; imported here so `from extproc.tools.sim.engine import
# VirtualSim, run_closed_loop, ...` keeps working (they need EngineCore, defined above).
from .virtual import Arrival, RunSummary, VirtualSim, run_closed_loop, run_open_loop  # noqa: E402

__all__ = [
    "ABORTED", "FINISHED", "RUNNING", "WAITING", "Arrival", "EngineCore", "RunSummary", "SimRequest",
    "StepPlan", "VirtualSim", "run_closed_loop", "run_open_loop",
]
