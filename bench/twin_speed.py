"""How fast the grid twin simulates: requests per CPU-second, per arm, on the reference scenario.

Baseline in the same run: the engine alone (the simulator's EngineCore on one replica driven by
VirtualSim with the same prompt/output lengths), so the ratio shows what the gateway, agents, map and
compressor cost on top of the engine. Goal (issue 17): >= 20,000 simulated requests per CPU-second. The
final JSON line also gives each arm's share of CPU in the gateway's own routing decision (a 1-in-8 sample of
decisions, timed) and the rate the rest of the twin would reach without it.

    .venv/bin/python bench/twin_speed.py [--rate 48] [--duration 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import time

from extproc.tools.sim.engine import Arrival, VirtualSim
from extproc.tools.sim.profiles import load_profiles, make_hardware
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario
from extproc.tools.workload.generate import generate_open_loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=48)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arms", default="B0,B1,R,R+C")
    a = ap.parse_args()
    sc = load_scenario(REFERENCE_SCENARIO)
    sc = sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"duration_s": a.duration, "warmup_s": 1})})
    run_grid(sc, ARMS["R+C"], 4, 1)  # corpus, BM25 item cache, profiles: built once, not timed
    reqs = generate_open_loop(sc.workload, a.rate, a.duration, 1)
    # Baseline: the engines alone, the same requests (no prefix hashes), spread over the 3 replicas.
    prof = load_profiles()
    best_base = 0.0
    for _ in range(a.rounds):
        t0 = time.process_time()
        for k, (gpu, share) in enumerate((("L40S", 0), ("H100", 1), ("H100", 2))):
            sim = VirtualSim(make_hardware(prof, gpu, "llama-3.1-8b"))
            sim.schedule_arrivals(Arrival(r.at, r.prompt_tokens, r.output_tokens) for i, r in enumerate(reqs) if i % 3 == share)
            sim.run()
        best_base = max(best_base, len(reqs) / (time.process_time() - t0))
    print(f"engine alone (3 VirtualSims, no prefix cache): {best_base:,.0f} requests/CPU-s")
    per_arm: dict[str, float] = {}
    share: dict[str, float] = {}
    rest: dict[str, float] = {}
    for arm in a.arms.split(","):
        best = 0.0
        best_dt = dec = 0.0
        for _ in range(a.rounds):
            t0 = time.process_time()
            res = run_grid(sc, ARMS[arm], a.rate, 1)
            dt = time.process_time() - t0
            if len(res.flights) / dt > best:
                best, best_dt, dec = len(res.flights) / dt, dt, res.decision_seconds
        # The gateway's own decision (Router.route -> Gateway.route, CPU time of a 1-in-8 sample, scaled),
        # and what the rest of the twin (engines, harness, map) would reach without it.
        share[arm] = round(dec / best_dt, 3)
        rest[arm] = round(len(res.flights) / max(best_dt - dec, 1e-9))
        print(f"twin {arm:5s} at {a.rate:g} req/s x {a.duration:g} s ({len(res.flights)} requests, {res.events} events): "
              f"{best:,.0f} requests/CPU-s = {best / best_base:.2f}x the engine alone (goal 20,000); "
              f"the gateway's decisions {share[arm]:.0%} of it ({1e6 * dec / len(res.flights):.0f} us each), "
              f"the rest alone {rest[arm]:,.0f} requests/CPU-s")
        per_arm[arm] = round(best)
    print(json.dumps({"sim_requests_per_cpu_s": per_arm, "engines_alone_requests_per_cpu_s": round(best_base),
                      "decision_share": share, "without_decisions_requests_per_cpu_s": rest,
                      "rate": a.rate, "duration_s": a.duration, "goal": 20_000}))


if __name__ == "__main__":
    main()
