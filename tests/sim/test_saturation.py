"""Validation: the engine saturates the way a GPU serving vLLM does (virtual clock, deterministic).

* throughput rises with load, then plateaus;
* past capacity the queue and TTFT grow;
* at saturation, halving the prompt length raises request throughput (what prompt compression buys).
"""

from __future__ import annotations

from extproc.tools.sim.engine import run_closed_loop, run_open_loop
from extproc.tools.sim.profiles import load_profiles, make_hardware

HW = make_hardware(load_profiles(), "H100", "llama-3.1-8b", 1)


def test_throughput_rises_then_plateaus_with_concurrency() -> None:
    levels = [1, 4, 16, 64, 128, 256, 512]
    runs = {
        c: run_closed_loop(HW, c, 1024, 256, num_requests=3 * c, warmup_requests=c, stagger=2.0)
        for c in levels
    }
    tput = {c: s.output_throughput for c, s in runs.items()}
    # Rises strongly at low load (decode is memory-bound: batching is nearly free)...
    assert tput[4] > 3 * tput[1]
    assert tput[16] > 2.5 * tput[4]
    assert tput[64] > 2 * tput[16]
    # ...with diminishing returns as steps turn compute-bound...
    assert tput[256] / tput[128] < tput[64] / tput[16]
    # ...and a plateau past capacity (max_num_seqs=256): more clients only queue.
    assert tput[512] < 1.10 * tput[256]
    assert runs[512].max_running == HW.engine.max_num_seqs and runs[512].mean_waiting > 100
    assert runs[512].mean_ttft > 10 * runs[256].mean_ttft


def test_queue_and_ttft_grow_past_capacity() -> None:
    rates = [2, 8, 16, 32, 64]
    runs = {r: run_open_loop(HW, r, 60.0, 2000, 300) for r in rates}
    served = max(s.request_throughput for s in runs.values())
    # Below capacity everything offered is served and nothing queues.
    assert runs[2].request_throughput > 0.95 * 2 and runs[2].max_waiting == 0
    # Past capacity: served rate is flat, the queue and TTFT grow with the offered rate.
    assert runs[64].request_throughput < 1.05 * runs[32].request_throughput
    assert runs[32].request_throughput < 32 and served < 64
    assert runs[16].mean_ttft < runs[32].mean_ttft < runs[64].mean_ttft
    assert runs[16].mean_waiting < runs[32].mean_waiting < runs[64].mean_waiting
    assert runs[64].mean_ttft > 20 * runs[2].mean_ttft


def test_halving_prompt_length_at_saturation_raises_request_throughput() -> None:
    full = run_closed_loop(HW, 512, 4000, 200, num_requests=1024, warmup_requests=512)
    half = run_closed_loop(HW, 512, 2000, 200, num_requests=1024, warmup_requests=512)
    assert half.request_throughput > 1.2 * full.request_throughput
    assert half.mean_ttft < full.mean_ttft
