"""The engine model: a vLLM-style continuous-batching scheduler over plain data, with no clock of its own.

One ``EngineCore`` stands for one model replica (``tp`` GPUs). Callers drive it step by step:

    plan = core.schedule(now)          # decide what the GPU computes this step (admission, chunks, KV)
    end = now + plan.duration          # how long the step takes, from the roofline in profiles.py
    emitted = core.commit(plan, end)   # the step's results: one token per sequence that sampled

Whoever owns the clock decides when ``end`` is: ``VirtualSim`` below jumps a virtual clock (tests and
the saturation study run thousands of steps in milliseconds, deterministically); the aiohttp adapter in
``server.py`` sleeps until ``end`` in real time. The scheduling rules follow vLLM V1:

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
from typing import Any, Callable, Hashable, Iterable, Sequence

from .kvcache import KVCacheManager
from .profiles import ReplicaHardware
from .stats import EngineStats

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
        plan.duration = self.hw.step_time(num_tokens, kv_read, attn) if items else 0.0
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


# ---- a virtual clock, for tests and the saturation study ------------------------------------------


@dataclass
class Arrival:
    time: float
    prompt_len: int
    output_len: int


@dataclass
class RunSummary:
    """Aggregates of a virtual run over the measured window."""

    duration: float
    completed: int
    request_throughput: float  # requests per second
    output_throughput: float  # generated tokens per second
    mean_ttft: float
    mean_itl: float
    max_waiting: int
    mean_waiting: float
    max_running: int
    preemptions: int
    mean_kv_usage: float


class VirtualSim:
    """Drives one ``EngineCore`` on a virtual clock: steps take zero wall time and exact model time."""

    def __init__(self, hw: ReplicaHardware) -> None:
        self.core = EngineCore(hw)
        self.now = 0.0
        self._arrivals: deque[Arrival] = deque()
        self._seq = 0
        self.completed: list[SimRequest] = []
        self.on_finish: Callable[[SimRequest, float], Iterable[Arrival]] | None = None
        # One sample per step: (end time, duration, waiting, running, KV usage, tokens emitted).
        self._samples: list[tuple[float, float, int, int, float, int]] = []

    def submit(self, arrival: Arrival) -> SimRequest:
        self._seq += 1
        req = SimRequest(f"v{self._seq}", arrival.prompt_len, arrival.output_len, arrival.time)
        self.core.add(req)
        return req

    def schedule_arrivals(self, arrivals: Iterable[Arrival]) -> None:
        merged = sorted([*self._arrivals, *arrivals], key=lambda a: a.time)
        self._arrivals = deque(merged)

    def run(self, until: float | None = None, max_steps: int = 10_000_000) -> None:
        core = self.core
        steps = 0
        while steps < max_steps:
            while self._arrivals and self._arrivals[0].time <= self.now:
                self.submit(self._arrivals.popleft())
            if not core.has_work:
                if not self._arrivals:
                    return
                nxt = self._arrivals[0].time
                if until is not None and nxt > until:
                    self.now = until
                    return
                self.now = nxt
                continue
            if until is not None and self.now >= until:
                return
            plan = core.schedule(self.now)
            end = self.now + plan.duration
            emitted = core.commit(plan, end)
            self._samples.append((end, plan.duration, core.num_waiting, core.num_running, core.kv_usage, len(emitted)))
            self.now = end
            steps += 1
            for r in emitted:
                if r.status == FINISHED:
                    self.completed.append(r)
                    if self.on_finish is not None:
                        self.schedule_arrivals(self.on_finish(r, end))

    def summary(self, t_from: float = 0.0, t_to: float | None = None) -> RunSummary:
        t_to = self.now if t_to is None else t_to
        done = [r for r in self.completed if r.last_token_time is not None and t_from < r.last_token_time <= t_to]
        dur = max(t_to - t_from, 1e-12)
        window = [s for s in self._samples if t_from < s[0] <= t_to]
        # Tokens, not completed requests, measure output throughput: identical requests started
        # together finish in cohorts, and counting whole requests would quantise the rate.
        out_tokens = sum(s[5] for s in window)
        ttfts = [r.first_token_time - r.arrival for r in done if r.first_token_time is not None]
        itls = [
            (r.last_token_time - r.first_token_time) / (r.num_generated - 1)
            for r in done
            if r.num_generated > 1 and r.first_token_time is not None and r.last_token_time is not None
        ]
        tot = sum(s[1] for s in window) or 1e-12
        return RunSummary(
            duration=dur,
            completed=len(done),
            request_throughput=len(done) / dur,
            output_throughput=out_tokens / dur,
            mean_ttft=sum(ttfts) / len(ttfts) if ttfts else 0.0,
            mean_itl=sum(itls) / len(itls) if itls else 0.0,
            max_waiting=max((s[2] for s in window), default=0),
            mean_waiting=sum(s[1] * s[2] for s in window) / tot,
            max_running=max((s[3] for s in window), default=0),
            preemptions=self.core.stats.preemptions,
            mean_kv_usage=sum(s[1] * s[4] for s in window) / tot,
        )


def run_closed_loop(
    hw: ReplicaHardware,
    concurrency: int,
    prompt_len: int,
    output_len: int,
    num_requests: int,
    warmup_requests: int = 0,
    stagger: float = 0.0,
) -> RunSummary:
    """``concurrency`` clients each send the next request as soon as the previous one finishes
    (like ``vllm bench serve --max-concurrency C --request-rate inf``). Deterministic.

    ``stagger``: client i starts at ``i * stagger / concurrency`` instead of all at t=0. Identical
    requests started together stay in lock-step cohorts forever on a noiseless clock (a real GPU's
    jitter breaks them up), so steady-state studies spread the starts; published-benchmark
    comparisons use 0, as the benchmark tools do."""
    sim = VirtualSim(hw)
    sent = concurrency
    marks: dict[str, float] = {}

    def again(req: SimRequest, t: float) -> list[Arrival]:
        nonlocal sent
        if len(sim.completed) == warmup_requests:
            marks["start"] = t
        if sent >= num_requests + warmup_requests:
            # From here on the load drains; the measured window ends at the first slot left empty.
            marks.setdefault("stop", t)
            return []
        sent += 1
        return [Arrival(t, prompt_len, output_len)]

    sim.on_finish = again
    sim.schedule_arrivals(Arrival(i * stagger / concurrency, prompt_len, output_len) for i in range(concurrency))
    sim.run()
    return sim.summary(t_from=marks.get("start", 0.0), t_to=marks.get("stop"))


def run_open_loop(
    hw: ReplicaHardware,
    rate: float,
    duration: float,
    prompt_len: int,
    output_len: int,
) -> RunSummary:
    """Requests arrive evenly spaced at ``rate`` per second for ``duration`` seconds; the summary covers
    the arrival window (so an overloaded engine shows a growing queue instead of a drained one)."""
    sim = VirtualSim(hw)
    n = int(rate * duration)
    sim.schedule_arrivals(Arrival(i / rate, prompt_len, output_len) for i in range(n))
    sim.run(until=duration)
    return sim.summary(t_from=duration * 0.25, t_to=duration)
