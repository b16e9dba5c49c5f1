#!/usr/bin/env python3
"""Compare the simulator's engine model with published vLLM measurements (numbers quoted in
docs/simulator.md). Pure engine on a virtual clock: deterministic, runs in a second or two.

    .venv/bin/python bench/sim_compare_published.py
"""

from __future__ import annotations

from extproc.sim.engine import run_closed_loop
from extproc.sim.profiles import load_profiles, make_hardware


def err(sim: float, pub: float) -> str:
    return f"{100.0 * (sim - pub) / pub:+.1f}%"


def main() -> None:
    prof = load_profiles()
    rows: list[tuple[str, float, float]] = []

    # 1. J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100" (johnmusgrave.com/p/vllm-throughput-
    #    latency-sweep-on): A100 40GB, Llama-3.1-8B-Instruct bf16, vLLM 0.23.0, `vllm bench serve` random
    #    1024-token input / 128-token output, --ignore-eos, --max-concurrency C, 20*C prompts.
    #    Published: decode at one request ~75 tokens/s; concurrency 8 gives 6.6x the throughput of 1.
    a100 = make_hardware(prof, "A100-40GB", "llama-3.1-8b", 1)
    c1 = run_closed_loop(a100, 1, 1024, 128, num_requests=20)
    c8 = run_closed_loop(a100, 8, 1024, 128, num_requests=160)
    rows.append(("A100-40GB, Llama-3.1-8B, C=1: decode tokens/s (1/ITL)", 1.0 / c1.mean_itl, 75.0))
    rows.append(("A100-40GB, Llama-3.1-8B, C=8 / C=1 output throughput", c8.output_throughput / c1.output_throughput, 6.6))
    rows.append(("A100-40GB, Llama-3.1-8B, C=8 output tokens/s (6.6 x 75)", c8.output_throughput, 6.6 * 75.0))

    # 2. InferenceBench "Recipe: concurrency sweep" (yobitelcomm.github.io/bench/recipes/concurrency-sweep/):
    #    1x H100-80GB-HBM3, vLLM 0.21.0, fp16, Llama-3.1-8B-Instruct, workload llm.inference.chatbot-short.
    #    Published median TPOT: 6.48 ms at concurrency 1, 6.59 ms at concurrency 4. The page does not give
    #    the prompt/output lengths; decode TPOT at low concurrency barely depends on them (checked below).
    h100 = make_hardware(prof, "H100", "llama-3.1-8b", 1)
    for conc, pub in ((1, 6.48), (4, 6.59)):
        s = run_closed_loop(h100, conc, 256, 256, num_requests=10 * conc, stagger=0.5)
        rows.append((f"H100, Llama-3.1-8B, concurrency {conc}: TPOT ms (256 in / 256 out)", 1000 * s.mean_itl, pub))

    w = max(len(r[0]) for r in rows)
    print(f"{'measurement':{w}}  {'simulated':>10} {'published':>10} {'error':>8}")
    for name, sim, pub in rows:
        print(f"{name:{w}}  {sim:10.2f} {pub:10.2f} {err(sim, pub):>8}")

    print("\nSensitivity of the H100 concurrency-4 TPOT to the unknown prompt length:")
    for p in (128, 512, 1024, 2048):
        s = run_closed_loop(h100, 4, p, 256, num_requests=40, stagger=0.5)
        print(f"  prompt {p:5d}: TPOT {1000 * s.mean_itl:.2f} ms ({err(1000 * s.mean_itl, 6.59)})")


if __name__ == "__main__":
    main()
