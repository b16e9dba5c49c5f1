"""The engine (decode cohort, stretches) against the per-sequence engine it replaced (`reference_engine.py`):
on random workloads — chunked prefill, shared prefixes, KV small enough to preempt, tiny and large token
budgets, few and many sequences — every request's first and last token time, cache hit and preemption
count, every counter and histogram, and the KV usage a report would read at any time are the same,
whether the engine is driven one step at a time or in stretches cut short by arrivals."""

from __future__ import annotations

import math
import random
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_engine as ref
from extproc.tools.sim.engine import EngineCore, SimRequest
from extproc.tools.sim.kvcache import hash_blocks
from extproc.tools.sim.profiles import load_profiles, make_hardware

PROFILES = load_profiles()
BS = 16


def _hardware(kv_util: float, budget: int, max_seqs: int, caching: bool):
    return make_hardware(PROFILES, "L4", "llama-3.1-8b", 1, gpu_memory_utilization=kv_util, max_model_len=4096,
                         max_num_batched_tokens=budget, max_num_seqs=max_seqs, enable_prefix_caching=caching)


def _workload(seed: int, n: int, rate: float) -> list[tuple[float, int, int, list[int] | None]]:
    """(arrival, prompt tokens, output tokens, token ids for the hash chain): prompts share one of a few
    prefixes so the prefix cache hits, and some requests are long enough to need chunked prefill."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(50_000) for _ in range(rng.choice((32, 200, 900)))] for _ in range(4)]
    t = 0.0
    out = []
    for i in range(n):
        t += rng.expovariate(rate)
        base = rng.choice(prefixes) if rng.random() < 0.6 else []
        tail = [rng.randrange(50_000) for _ in range(rng.choice((1, 7, 40, 300, 1500)))]
        toks = (base + tail)[:3000]
        out.append((t, len(toks), rng.choice((1, 2, 5, 17, 64, 300)), toks if rng.random() < 0.9 else None))
    return out


def _request(cls, i: int, arr) -> object:
    t, p, o, toks = arr
    hashes = hash_blocks(toks, BS) if toks is not None else None
    return cls(f"r{i}", p, o, t, block_hashes=hashes)


def _drive(core, cls, work, report_times, *, max_steps: int = 1):
    """The twin's way: arrivals join the queue when they come; a step in progress is never changed; a
    report reads the state of the step in progress."""
    reqs = [_request(cls, i, a) for i, a in enumerate(work)]
    i = 0
    now = 0.0
    reports: list[tuple[float, int, int, float]] = []
    ri = 0
    while i < len(reqs) or core.has_work:
        while i < len(reqs) and reqs[i].arrival <= now:
            core.add(reqs[i])
            i += 1
        if not core.has_work:
            nxt = reqs[i].arrival
            while ri < len(report_times) and report_times[ri] < nxt:
                reports.append((report_times[ri], core.num_running, core.num_waiting, core.kv_usage))
                ri += 1
            now = nxt
            continue
        plan = core.schedule(now, max_steps) if max_steps > 1 else core.schedule(now)
        if max_steps > 1 and plan.steps > 1 and i < len(reqs) and reqs[i].arrival < plan.end:
            core.truncate(plan, reqs[i].arrival)
        end = plan.end if max_steps > 1 else now + plan.duration
        while ri < len(report_times) and report_times[ri] < end:
            usage = core.kv_usage_at(plan, report_times[ri]) if max_steps > 1 else core.kv_usage
            reports.append((report_times[ri], core.num_running, core.num_waiting, usage))
            ri += 1
        core.commit(plan, end)
        now = end
    return reqs, reports


def _stats(core) -> dict:
    s = core.stats
    return {
        "steps": s.steps, "busy": s.busy_seconds, "prompt": s.prompt_tokens, "gen": s.generation_tokens,
        "preempt": s.preemptions, "pcq": s.prefix_cache_queries, "pch": s.prefix_cache_hits,
        "finished": dict(s.finished), "ttft": (s.ttft.counts, s.ttft.sum), "e2e": (s.e2e.counts, s.e2e.sum),
        "queue": (s.queue.counts, s.queue.sum), "itl_counts": s.itl.counts, "free": core.free_blocks,
    }


def _compare(work, hwargs, max_steps) -> None:
    h = _hardware(*hwargs)
    old = ref.EngineCore(h)
    new = EngineCore(h)
    horizon = work[-1][0] + 30
    report_times = [k * 0.25 + 0.013 for k in range(int(horizon / 0.25))]
    a, ra = _drive(old, ref.SimRequest, work, report_times)
    b, rb = _drive(new, SimRequest, work, report_times, max_steps=max_steps)
    for x, y in zip(a, b):
        assert (x.first_token_time, x.last_token_time, x.num_cached_tokens, x.preemptions, x.num_generated,
                x.status) == (y.first_token_time, y.last_token_time, y.num_cached_tokens, y.preemptions,
                              y.num_generated, y.status), x.rid
    sa, sb = _stats(old), _stats(new)
    assert sb == sa
    assert new.stats.itl.sum == pytest.approx(old.stats.itl.sum, rel=1e-12)
    assert rb == ra


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 80),
    rate=st.sampled_from([2.0, 20.0, 200.0]),
    kv_util=st.sampled_from([0.78, 0.8, 0.9]),
    budget=st.sampled_from([256, 2048, 8192]),
    max_seqs=st.sampled_from([2, 16, 256]),
    caching=st.booleans(),
    max_steps=st.sampled_from([1, 8, 4096]),
)
def test_same_results_as_the_per_sequence_engine(seed, n, rate, kv_util, budget, max_seqs, caching, max_steps):
    _compare(_workload(seed, n, rate), (kv_util, budget, max_seqs, caching), max_steps)


@pytest.mark.parametrize("max_steps", [1, 4096])
def test_heavy_overload_with_preemptions(max_steps):
    work = _workload(7, 400, 400.0)
    _compare(work, (0.78, 2048, 256, True), max_steps)
    assert ref.EngineCore(_hardware(0.78, 2048, 256, True)) is not None


def test_stretches_take_fewer_calls_for_the_same_results():
    work = _workload(3, 60, 10.0)
    h = _hardware(0.9, 8192, 256, True)
    core = EngineCore(h)
    calls = 0
    orig = core.schedule

    def counting(now, max_steps=1):
        nonlocal calls
        calls += 1
        return orig(now, max_steps)

    core.schedule = counting  # type: ignore[method-assign]
    _drive(core, SimRequest, work, [], max_steps=4096)
    assert calls < core.stats.steps / 2, (calls, core.stats.steps)


def test_kv_usage_inside_a_stretch_counts_the_blocks_of_the_steps_begun():
    h = _hardware(0.9, 8192, 256, False)
    core = EngineCore(h)
    r = SimRequest("a", 15, 100, 0.0)
    core.add(r)
    p = core.schedule(0.0)
    core.commit(p, p.end)
    assert r.num_computed == 15 and r.num_blocks == 1
    plan = core.schedule(p.end, 1000)
    assert plan.steps == 99  # the rest of the output, in one stretch
    # Token 16 (0-based 15) fills block 1; block 2 opens when token 17 is computed, in step 2 of the stretch.
    before = core.kv_usage_at(plan, plan.ends[0] - 1e-9)
    after = core.kv_usage_at(plan, plan.ends[0] + 1e-9)
    assert after - before == pytest.approx(1 / core.total_blocks)
    i = bisect_left(plan.ends, plan.ends[40])
    assert core.kv_usage_at(plan, plan.ends[i] + 1e-9) * core.total_blocks == pytest.approx(
        math.ceil((15 + i + 2) / BS))
