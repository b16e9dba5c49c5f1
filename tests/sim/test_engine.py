"""The engine model on a virtual clock: deterministic, no sleeping, no timing assertions on the host."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.tools.sim.engine import FINISHED, Arrival, EngineCore, SimRequest, VirtualSim
from extproc.tools.sim.profiles import load_profiles, make_hardware

PROFILES = load_profiles()


def hw(gpu: str = "H100", model: str = "llama-3.1-8b", tp: int = 1, **kw):
    return make_hardware(PROFILES, gpu, model, tp, **kw)


def test_single_request_prefill_then_one_token_per_step() -> None:
    sim = VirtualSim(hw())
    sim.schedule_arrivals([Arrival(0.0, 1000, 10)])
    sim.run()
    (r,) = sim.completed
    assert r.num_generated == 10 and r.status == FINISHED
    h = sim.core.hw
    # TTFT is exactly one prefill step of the whole prompt (fits the token budget).
    assert r.first_token_time == pytest.approx(h.step_time(1000, 0, 1000 * 1001 // 2))
    assert sim.core.stats.steps == 10  # 1 prefill step + 9 decode steps
    assert sim.core.free_blocks == sim.core.total_blocks  # KV returned


def test_chunked_prefill_splits_long_prompt_by_token_budget() -> None:
    h = hw(max_num_batched_tokens=2048)
    sim = VirtualSim(h)
    sim.schedule_arrivals([Arrival(0.0, 5000, 2)])
    sim.run()
    # ceil(5000 / 2048) = 3 prefill steps, the last also samples token 1, then 1 decode step.
    assert sim.core.stats.steps == math.ceil(5000 / 2048) + 1


def test_continuous_batching_admits_mid_generation() -> None:
    sim = VirtualSim(hw())
    long_req = sim.submit(Arrival(0.0, 100, 200))
    sim.run(until=0.1)
    assert long_req.num_generated > 0 and not long_req.finished
    late = sim.submit(Arrival(sim.now, 100, 5))
    sim.run()
    # The late, short request finished long before the long one: it joined the running batch.
    assert late.last_token_time < long_req.last_token_time


def test_decode_steps_batch_all_running_sequences() -> None:
    core = EngineCore(hw())
    reqs = [SimRequest(f"r{i}", 50, 20, 0.0) for i in range(8)]
    for r in reqs:
        core.add(r)
    p1 = core.schedule(0.0)
    assert p1.num_prefill_tokens == 8 * 50 and p1.num_decode == 0
    core.commit(p1, p1.duration)
    p2 = core.schedule(p1.duration)
    assert p2.num_decode == 8 and p2.num_tokens == 8  # one token per sequence per step


def test_max_num_seqs_caps_the_batch() -> None:
    core = EngineCore(hw(max_num_seqs=4))
    for i in range(10):
        core.add(SimRequest(f"r{i}", 20, 5, 0.0))
    plan = core.schedule(0.0)
    assert len(plan.items) == 4 and core.num_running == 4 and core.num_waiting == 6


def test_requests_wait_when_kv_cache_is_full() -> None:
    h = hw("L4", max_model_len=8192)
    core = EngineCore(h)
    cap = h.kv_capacity_tokens
    n = cap // 4000 + 3  # more 4000-token prompts than the cache holds
    for i in range(n):
        core.add(SimRequest(f"r{i}", 4000, 50, 0.0))
    t = 0.0
    for _ in range(20):
        plan = core.schedule(t)
        t += plan.duration
        core.commit(plan, t)
    assert core.num_waiting > 0
    assert core.kv_usage > 0.9
    assert core.free_blocks >= 0


def test_preemption_when_decode_outgrows_kv_and_everything_completes() -> None:
    h = hw("L4", max_model_len=8192)
    sim = VirtualSim(h)
    # Prompts fit at admission, but their outputs do not all fit together: vLLM preempts.
    n = h.kv_capacity_tokens // 1000
    sim.schedule_arrivals([Arrival(0.0, 900, 600) for _ in range(n)])
    sim.run()
    assert len(sim.completed) == n
    assert sim.core.stats.preemptions > 0
    assert sum(r.num_generated for r in sim.completed) == n * 600
    assert sim.core.free_blocks == sim.core.total_blocks


def test_abort_frees_kv_and_stops_generation() -> None:
    core = EngineCore(hw())
    r = SimRequest("x", 500, 100, 0.0)
    core.add(r)
    p = core.schedule(0.0)
    core.commit(p, p.duration)
    assert core.free_blocks < core.total_blocks
    core.abort(r)
    p2 = core.schedule(p.duration)
    assert p2.empty and core.free_blocks == core.total_blocks and core.num_running == 0
    assert core.stats.finished["abort"] == 1


def test_add_rejects_impossible_requests() -> None:
    core = EngineCore(hw("L4", max_model_len=4096))
    with pytest.raises(ValueError):
        core.add(SimRequest("big", 4000, 200, 0.0))
    with pytest.raises(ValueError):
        core.add(SimRequest("zero", 10, 0, 0.0))


def test_runs_are_deterministic() -> None:
    def run() -> list[tuple[float, float]]:
        sim = VirtualSim(hw("A100"))
        sim.schedule_arrivals([Arrival(i * 0.01, 200 + 37 * (i % 7), 30 + i % 11) for i in range(300)])
        sim.run()
        return [(r.first_token_time, r.last_token_time) for r in sim.completed]

    assert run() == run()


def test_stats_count_tokens_and_ttft() -> None:
    sim = VirtualSim(hw())
    sim.schedule_arrivals([Arrival(0.0, 100, 7), Arrival(0.0, 300, 3)])
    sim.run()
    s = sim.core.stats
    assert s.prompt_tokens == 400 and s.generation_tokens == 10
    assert s.ttft.count == 2 and s.e2e.count == 2
    assert s.itl.count == 6 + 2  # tokens after the first of each request
    assert s.finished["length"] == 2


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 2), st.integers(1, 3000), st.integers(1, 400)),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([256, 2048, 8192]),
    st.sampled_from([2, 16, 256]),
)
def test_invariants_on_random_workloads(work, budget, max_seqs) -> None:
    h = hw("L4", max_model_len=4096, max_num_batched_tokens=budget, max_num_seqs=max_seqs)
    sim = VirtualSim(h)
    sim.schedule_arrivals([Arrival(t, p, o) for t, p, o in work])
    core = sim.core
    steps = 0
    while core.has_work or sim._arrivals:
        sim.run(max_steps=1)
        steps += 1
        assert 0 <= core.free_blocks <= core.total_blocks
        assert core.num_running <= max_seqs
        used = sum(r.num_blocks for r in core.running)
        assert used == core.total_blocks - core.free_blocks
        assert steps < 200_000
    assert len(sim.completed) == len(work)
    assert sorted(r.num_generated for r in sim.completed) == sorted(o for _, _, o in work)
    for r in sim.completed:
        assert r.first_token_time >= r.arrival
