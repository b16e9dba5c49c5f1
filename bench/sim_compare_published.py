#!/usr/bin/env python3
"""Compare the simulator's engine model with published measurements (the table in docs/simulator.md).

Pure engine on a virtual clock: deterministic, about 20 s here. Each row says whether the point was
used to set a constant ("fitted") or only checked against ("check").

    .venv/bin/python bench/sim_compare_published.py [--json]
"""

from __future__ import annotations

import dataclasses
import json
import sys

from extproc.tools.sim.engine import RunSummary, run_closed_loop
from extproc.tools.sim.profiles import ReplicaHardware, load_profiles, make_hardware

PROF = load_profiles()
MUSGRAVE = "J. Musgrave, vLLM throughput-latency sweep on NVIDIA A100 (johnmusgrave.com/p/vllm-throughput-latency-sweep-on)"
INFBENCH = "InferenceBench, Recipe: concurrency sweep (yobitelcomm.github.io/bench/recipes/concurrency-sweep/)"
TRTLLM = "TensorRT-LLM perf overview, Llama 3.1 8B FP8 TP1 (NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @00f3768)"
MLPERF = "MLPerf Inference v5.1 offline, Red Hat (vLLM 0.10.0, FP8): redhat.com blog 'Red Hat MLPerf Inference v5.1 results'"
# MLPerf's Llama-3.1-8B task summarises CNN/DailyMail articles with at most 128 output tokens; the
# blog gives no lengths, so the input length is an assumption (the ratio row barely depends on it).
MLPERF_ISL, MLPERF_OSL = 1000, 128


def hw(gpu: str, model: str, *, kv_bytes: int | None = None, **engine: object) -> ReplicaHardware:
    h = make_hardware(PROF, gpu, model, 1, **engine)
    if kv_bytes is not None:
        h = dataclasses.replace(h, model=dataclasses.replace(h.model, kv_dtype_bytes=kv_bytes))
    return h


def offline(h: ReplicaHardware, isl: int, osl: int, clients: int = 512) -> RunSummary:
    """An offline / max-throughput run: every request queued at once, measured in steady state."""
    return run_closed_loop(h, clients, isl, osl, num_requests=4 * clients, warmup_requests=clients, stagger=1.0)


def rows() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def add(point: str, source: str, published: float, simulated: float, role: str = "check") -> None:
        out.append({
            "point": point, "source": source, "published": published, "simulated": round(simulated, 3),
            "error_pct": round(100.0 * (simulated - published) / published, 1), "role": role,
        })

    # 1. A100 40GB, bf16, vLLM 0.23.0, random 1024 in / 128 out, --ignore-eos, --max-concurrency C.
    a100 = hw("A100-40GB", "llama-3.1-8b")
    c1 = run_closed_loop(a100, 1, 1024, 128, num_requests=20)
    c8 = run_closed_loop(a100, 8, 1024, 128, num_requests=160)
    add("A100-40GB bf16, C=1: decode tokens/s (1/ITL)", MUSGRAVE, 75.0, 1.0 / c1.mean_itl)
    add("A100-40GB bf16, C=8 / C=1 output throughput", MUSGRAVE, 6.6, c8.output_throughput / c1.output_throughput)

    # 2. H100 80GB, fp16, vLLM 0.21.0, chatbot-short (lengths not given; 256/256 assumed).
    h100 = hw("H100", "llama-3.1-8b")
    for conc, pub in ((1, 6.48), (4, 6.59)):
        s = run_closed_loop(h100, conc, 256, 256, num_requests=10 * conc, stagger=0.5)
        add(f"H100 bf16, concurrency {conc}: median TPOT ms", INFBENCH, pub, 1000 * s.mean_itl,
            "fitted" if conc == 1 else "check")

    # 3. Prefill-heavy maximum throughput, FP8 weights (TensorRT-LLM, trtllm-bench throughput,
    #    ISL/OSL 2048/128: 16 prompt tokens per output token). ModelOpt FP8 checkpoints quantise the KV
    #    cache too (assumed: FP8 KV).
    for gpu, pub in (("H100", 3450.0), ("H200", 3538.0)):
        s = offline(hw(gpu, "llama-3.1-8b-fp8", kv_bytes=1), 2048, 128)
        add(f"{gpu} FP8, 2048 in / 128 out: max output tokens/s", TRTLLM, pub, s.output_throughput)

    # 4. MLPerf Inference v5.1 Llama-3.1-8B offline (CNN/DailyMail summarisation, prefill-heavy):
    #    H100 5,777 and L40S 1,642 output tokens/s, vLLM defaults for the KV cache (bf16).
    m_h100 = offline(hw("H100", "llama-3.1-8b-fp8"), MLPERF_ISL, MLPERF_OSL).output_throughput
    m_l40s = offline(hw("L40S", "llama-3.1-8b-fp8"), MLPERF_ISL, MLPERF_OSL).output_throughput
    add("L40S / H100 FP8 offline throughput ratio (MLPerf)", MLPERF, 1642.0 / 5777.0, m_l40s / m_h100, "fitted")
    add(f"L40S FP8 offline output tokens/s ({MLPERF_ISL} in assumed)", MLPERF, 1642.0, m_l40s)
    add(f"H100 FP8 offline output tokens/s ({MLPERF_ISL} in assumed)", MLPERF, 5777.0, m_h100)
    return out


def main() -> None:
    table = rows()
    if "--json" in sys.argv:
        print(json.dumps(table))
        return
    w = max(len(str(r["point"])) for r in table)
    print(f"{'point':{w}}  {'published':>10} {'simulated':>10} {'error':>8}  role")
    for r in table:
        print(f"{r['point']:{w}}  {r['published']:10.3f} {r['simulated']:10.3f} {r['error_pct']:+7.1f}%  {r['role']}")
    print("\nSensitivity of the MLPerf rows to the assumed input length (FP8, bf16 KV):")
    for isl in (600, 800, 1000, 1300):
        h = offline(hw("H100", "llama-3.1-8b-fp8"), isl, MLPERF_OSL).output_throughput
        l4 = offline(hw("L40S", "llama-3.1-8b-fp8"), isl, MLPERF_OSL).output_throughput
        print(f"  input {isl:5d}: H100 {h:7.0f} ({100 * (h / 5777 - 1):+.1f}%)  L40S {l4:7.0f} "
              f"({100 * (l4 / 1642 - 1):+.1f}%)  L40S/H100 {l4 / h:.3f} ({100 * (l4 / h / (1642 / 5777) - 1):+.1f}%)")


if __name__ == "__main__":
    main()
