"""TEST ORACLE: the engine as it was before the O(1)-per-step rewrite (one object per sequence, every step
walks every running sequence), kept verbatim so tests/sim/test_engine_oracle.py can check that the
product engine (extproc/tools/sim/engine.py) gives the same results step for step.

The engine model: a vLLM-style continuous-batching scheduler over plain data, with no clock of its own.

One ``EngineCore`` stands for one model replica (``tp`` GPUs). Callers drive it step by step:

    plan = core.schedule(now)          # decide what the GPU computes this step (admission, chunks, KV)
    end = now + plan.duration          # how long the step takes, from the roofline in profiles.py
    emitted = core.commit(plan, end)   # the step's results: one token per sequence that sampled

Whoever owns the clock decides when ``end`` is: ``VirtualSim`` (``virtual.py``) jumps a virtual clock (tests and
the saturation study run thousands of steps in milliseconds, deterministically); the replica loop in
``replica.py`` sleeps until ``end`` in real time. The scheduling rules follow vLLM V1:

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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from reference_kvcache import KVCacheManager
from extproc.tools.sim.profiles import ReplicaHardware
from extproc.tools.sim.stats import EngineStats

WAITING, RUNNING, FINISHED, ABORTED = "waiting", "running", "finished", "aborted"


@dataclass(eq=False)
class SimRequest:
    """One generation request as the engine sees it: token counts only, no text."""

    rid: str
    prompt_len: int
    max_output: int  # tokens to generate; the request finishes when it has generated this many
    arrival: float
    finish_reason: str = "length"  # reported when max_output is reached ("stop" for a natural EOS)
    sink: Any = None  # owned by the adapter (where tokens go); the engine only hands it back
    num_computed: int = 0  # tokens whose KV is in the cache
    num_generated: int = 0
    num_blocks: int = 0
    status: str = WAITING
    first_scheduled: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    preemptions: int = 0
    # Prefix caching: the hash chain of the prompt's full blocks (None = not cacheable), the prompt
    # tokens found cached at the first admission, the KV block ids held, and how many of them are
    # registered in the cache.
    block_hashes: Sequence[Hashable] | None = None
    num_cached_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    num_registered_blocks: int = 0

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_generated

    @property
    def finished(self) -> bool:
        return self.status in (FINISHED, ABORTED)


@dataclass
class StepPlan:
    """What one engine step computes. ``items`` pairs each scheduled request with its token count."""

    items: list[tuple[SimRequest, int]] = field(default_factory=list)
    num_tokens: int = 0
    num_prefill_tokens: int = 0
    num_decode: int = 0
    kv_read_tokens: int = 0
    attn_ctx_sum: int = 0
    preempted: int = 0
    duration: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.items


class EngineCore:
    """Continuous-batching scheduler and KV block accounting for one replica."""

    def __init__(self, hw: ReplicaHardware, *, prefix_caching: bool | None = None) -> None:
        self.hw = hw
        self.block_size = hw.engine.block_size
        self.total_blocks = hw.num_blocks
        self.prefix_caching = hw.engine.enable_prefix_caching if prefix_caching is None else prefix_caching
        self.kv = KVCacheManager(hw.num_blocks, hw.engine.block_size, self.prefix_caching)
        self.max_num_seqs = hw.engine.max_num_seqs
        self.max_batched = hw.engine.max_num_batched_tokens
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.stats = EngineStats()
        self._aborts = 0

    # ---- inputs -------------------------------------------------------------------------------------
    def add(self, req: SimRequest) -> None:
        if req.prompt_len < 1 or req.max_output < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        if req.prompt_len + req.max_output > self.hw.effective_max_model_len:
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
    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

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

    def _release(self, r: SimRequest) -> None:
        self.kv.free(r.block_ids, r.num_blocks)
        r.block_ids = []
        r.num_blocks = 0
        r.num_registered_blocks = 0

    def _grow(self, r: SimRequest, need: int, computed_after: int) -> None:
        """Give ``r`` ``need`` more blocks; register its prompt blocks that are full after this step."""
        kv = self.kv
        if need > 0:
            kv.allocate(r.block_ids, need)
            r.num_blocks += need
        hashes = r.block_hashes
        if hashes is not None and r.num_registered_blocks < len(hashes) and self.prefix_caching:
            full = min(len(hashes), computed_after // self.block_size)
            if full > r.num_registered_blocks:
                r.num_registered_blocks = kv.cache_blocks(r.block_ids, hashes, r.num_registered_blocks, full)

    # ---- one step -----------------------------------------------------------------------------------
    def _purge_aborted(self) -> None:
        if not self._aborts:
            return
        self._aborts = 0
        keep: list[SimRequest] = []
        for r in self.running:
            if r.status == ABORTED:
                self._release(r)
            else:
                keep.append(r)
        self.running = keep
        if any(r.status == ABORTED for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if r.status != ABORTED)

    def _preempt(self, victim: SimRequest) -> None:
        self._release(victim)
        victim.num_computed = 0  # recompute preemption: prompt and generated tokens are prefilled again
        victim.status = WAITING
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)

    def schedule(self, now: float) -> StepPlan:
        """Choose this step's work and allocate its KV blocks. Pure bookkeeping; no time passes."""
        self._purge_aborted()
        plan = StepPlan()
        budget = self.max_batched
        bs = self.block_size
        running = self.running
        items = plan.items
        kv = self.kv
        caching = self.prefix_caching
        stats = self.stats
        idx = 0
        while idx < len(running) and budget > 0:
            r = running[idx]
            c0 = r.num_computed
            n = r.prompt_len + r.num_generated - c0
            if n > budget:
                n = budget  # chunked prefill: the rest of the prompt goes in later steps
            need = (c0 + n + bs - 1) // bs - r.num_blocks
            self_preempted = False
            while need > kv.num_free:
                victim = running.pop()
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
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                r = waiting[0]
                hashes = r.block_hashes
                # A waiting request has nothing computed (new, or preempted: recompute from scratch).
                hit = kv.lookup(hashes, r.num_tokens) if caching and hashes is not None else []
                cached = len(hit) * bs
                n = min(r.num_tokens - cached, budget)
                need = (cached + n + bs - 1) // bs - len(hit)
                if not kv.can_admit(hit, need):
                    break  # head-of-line waits for KV space, as in vLLM (FCFS)
                waiting.popleft()
                if hit:
                    kv.touch(hit)
                    r.block_ids = hit
                    r.num_blocks = len(hit)
                    r.num_registered_blocks = len(hit)
                    r.num_computed = cached
                if caching and hashes is not None:
                    # Counted once per admission (vLLM counts each lookup, also a head-of-line retry).
                    stats.prefix_cache_queries += r.num_tokens
                    stats.prefix_cache_hits += cached
                self._grow(r, need, cached + n)
                r.status = RUNNING
                if r.first_scheduled is None:
                    r.first_scheduled = now
                    r.num_cached_tokens = cached
                    stats.queue.observe(now - r.arrival)
                running.append(r)
                items.append((r, n))
                budget -= n
        # Aggregate the cost inputs of the roofline.
        num_tokens = kv_read = attn = prefill = decode = 0
        for r, n in items:
            c0 = r.num_computed
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
        return plan

    def commit(self, plan: StepPlan, t: float) -> list[SimRequest]:
        """Apply a finished step at time ``t``; return the requests that produced a token in it.

        A request in the returned list whose ``finished`` is true produced its last token.
        """
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
                continue  # aborted while the step ran; blocks are freed at the next schedule
            r.num_computed += n
            if r.num_computed < r.prompt_len + r.num_generated:
                continue  # a prefill chunk that did not reach the end of the prompt
            r.num_generated += 1
            last = r.last_token_time
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
            r.last_token_time = t
            st.generation_tokens += 1
            if r.num_generated >= r.max_output:
                r.status = FINISHED
                self._release(r)
                st.finished[r.finish_reason] = st.finished.get(r.finish_reason, 0) + 1
                st.e2e.observe(t - r.arrival)
                any_finished = True
            emitted.append(r)
        if same_gap_n:
            itl.observe(t - same_gap_last, same_gap_n)  # type: ignore[operator]
        if any_finished:
            self.running = [r for r in self.running if r.status == RUNNING or r.status == ABORTED]
        return emitted
