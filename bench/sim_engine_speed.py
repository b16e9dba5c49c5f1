#!/usr/bin/env python3
"""CPU cost of the pure engine (what the grid twin pays per simulated request), prefix caching on and
off, in one run: ratios against the caching-off baseline of the same run.

    .venv/bin/python bench/sim_engine_speed.py [--requests 3000]

Workload: closed loop, 128 clients, H100 + Llama-3.1-8B, 1024-token prompts whose first 768 tokens
are one of 8 shared "documents" (so caching has hits), 128 output tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from extproc.tools.sim.engine import EngineCore, SimRequest
from extproc.tools.sim.kvcache import hash_blocks
from extproc.tools.sim.profiles import load_profiles, make_hardware


def run(prefix_caching: bool, with_hashes: bool, n: int, clients: int = 128) -> dict[str, float]:
    hw = make_hardware(load_profiles(), "H100", "llama-3.1-8b", 1)
    core = EngineCore(hw, prefix_caching=prefix_caching)
    rng = random.Random(7)
    docs = [[rng.randrange(100_000) for _ in range(768)] for _ in range(8)]
    # Hashes are computed outside the timed loop: the twin (or the HTTP server) owns that cost.
    prompts = []
    for i in range(n):
        toks = docs[i % 8] + [rng.randrange(100_000) for _ in range(256)]
        prompts.append(hash_blocks(toks) if with_hashes else None)
    sent = 0
    t = 0.0

    def submit() -> None:
        nonlocal sent
        core.add(SimRequest(f"r{sent}", 1024, 128, t, block_hashes=prompts[sent]))
        sent += 1

    for _ in range(clients):
        submit()
    done = steps = 0
    c0 = time.process_time()
    while core.has_work:
        plan = core.schedule(t)
        t += plan.duration
        for r in core.commit(plan, t):
            if r.finished:
                done += 1
                if sent < n:
                    submit()
        steps += 1
    cpu = time.process_time() - c0
    st = core.stats
    return {
        "cpu_s": round(cpu, 3), "requests": done, "steps": steps, "requests_per_cpu_s": round(done / cpu),
        "virtual_s": round(t, 2), "hit_rate": round(st.prefix_cache_hits / st.prefix_cache_queries, 3) if st.prefix_cache_queries else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    n = ap.parse_args().requests
    base = run(False, False, n)
    rows = {"caching off": base, "caching on, no hashes": run(True, False, n), "caching on, shared prefixes": run(True, True, n)}
    for name, r in rows.items():
        print(f"{name:28s} cpu {r['cpu_s']:6.3f} s  {r['requests_per_cpu_s']:6d} req/cpu-s  steps {r['steps']:5d}  "
              f"virtual {r['virtual_s']:7.2f} s  hit rate {r['hit_rate']:.3f}  cpu ratio {r['cpu_s'] / base['cpu_s']:.2f}")
    print(json.dumps({k: {**v, "cpu_ratio_vs_off": round(v["cpu_s"] / base["cpu_s"], 3)} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
