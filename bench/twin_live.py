"""Twin against the live path at saturation (issue 17, item 3): for each arm, the twin's goodput on the
time-dilated reference grid (pooled Wilson rule over `--seeds` seeds), then live points at fractions of
it through the whole local stack (real Envoy, `aigrid serve`, Redis, agents, dilated `aigrid sim` sites)
beside the twin on the same requests, each point with at least `--requests` measured requests; the live
pass is repeated `--passes` times to show its own spread.

    nice -n 5 .venv/bin/python bench/twin_live.py --dilation 5 --arms B1,R+C --out /tmp/twin_live.json

Prints one line per point and, at the end, the markdown table for docs/evaluation.md. Every process of the
stack is stopped at the end (also on failure).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from extproc.tools.stack.calibrate import live_point, live_stack, seconds_for
from extproc.tools.twin.dilation import dilated
from extproc.tools.twin.experiment import run_experiment
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario


def twin_goodput(dsc: Any, arm: str, seeds: int) -> dict[str, Any]:
    sc = dsc.model_copy(update={"sweep": dsc.sweep.model_copy(update={"seeds": list(range(1, seeds + 1))}),
                                "arms": [arm]})
    doc = run_experiment(sc, (arm,), workers=min(2, os.cpu_count() or 1))
    g = doc["arms"][arm]["goodput"]
    return {"value": g["value"], "ci95": g["ci95"], "capped_at_top_rate": g["capped_at_top_rate"],
            "wall_s": round(doc["wall_seconds"], 1)}


def row(p: dict[str, Any]) -> str:
    lv, tw = p["live"], p["twin"]
    seeds = p["twin_seeds"].values()

    def rng(key: str) -> str:
        xs = [s[key] for s in seeds if s[key] is not None]
        return f"[{min(xs):g}, {max(xs):g}]" if xs else ""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:+.0f}%"

    return (f"| {p['arm']} | {100 * p['fraction_of_goodput']:.0f}% ({p['rate']:.2f}/s, {p['requests']}) | "
            f"{lv['requests_per_s']:.2f} / {tw['requests_per_s']:.2f} {rng('requests_per_s')} ({pct(p['rps_diff'])}) | "
            f"{lv['ttft_p50_ms']} / {tw['ttft_p50_ms']} | "
            f"{lv['ttft_p95_ms']} / {tw['ttft_p95_ms']} {rng('ttft_p95_ms')} ({pct(p['ttft_p95_diff'])}) | "
            f"{lv['tpot_p95_ms']} / {tw['tpot_p95_ms']} {rng('tpot_p95_ms')} ({pct(p['tpot_p95_diff'])}) | "
            f"{lv['attainment']:.3f} / {tw['attainment']:.3f} {rng('attainment')} ({pct(p['attainment_diff'])}) | "
            f"{'valid' if p['live_valid'] else 'INVALID'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dilation", type=float, default=5.0)
    ap.add_argument("--arms", default="B1,R+C")
    ap.add_argument("--fractions", default="0.5,0.8,1.0,1.2")
    ap.add_argument("--requests", type=int, default=300, help="measured requests per point (at least)")
    ap.add_argument("--warmup", type=float, default=10.0, help="wall seconds of warm-up per point")
    ap.add_argument("--drain", type=float, default=60.0, help="wall seconds a request may take after the last arrival")
    ap.add_argument("--seeds", type=int, default=3, help="twin seeds (goodput and the twin's spread per point)")
    ap.add_argument("--passes", type=int, default=2, help="live passes over the points (2: repeated once)")
    ap.add_argument("--goodput", default=None, help="ARM=VALUE,... skip the twin's search (a value from an earlier run)")
    ap.add_argument("--port", type=int, default=10000)
    ap.add_argument("--admin-port", type=int, default=9901)
    ap.add_argument("--out", default="twin_live.json")
    a = ap.parse_args()
    dsc = dilated(load_scenario(REFERENCE_SCENARIO), a.dilation)
    fractions = [float(x) for x in a.fractions.split(",")]
    given = dict(kv.split("=") for kv in a.goodput.split(",")) if a.goodput else {}
    doc: dict[str, Any] = {"dilation": a.dilation, "requests_per_point": a.requests, "warmup_s": a.warmup,
                           "drain_s": a.drain, "arms": {}, "points": []}
    t0 = time.monotonic()
    for arm in a.arms.split(","):
        g = {"value": float(given[arm]), "given": True} if arm in given else twin_goodput(dsc, arm, a.seeds)
        doc["arms"][arm] = {"goodput": g}
        print(f"{arm}: twin goodput on the {a.dilation:g}x dilated grid {g}", flush=True)
        for pas in range(a.passes):
            for f in fractions:
                rate = f * g["value"]
                secs = seconds_for(rate, a.requests, a.warmup, dsc.workload)
                # A fresh stack per point, as every twin run starts: empty prefix caches at the sites, an empty
                # prefix index and no affinity in the gateway (a stack kept between points carries its warm
                # caches into the next one, and the live side then looks faster than the twin).
                with tempfile.TemporaryDirectory(prefix="twinlive-") as wd:
                    stack = live_stack(dsc, arm, Path(wd), a.port, a.admin_port)
                    stack.start()
                    try:
                        p = live_point(stack, dsc, arm, rate, secs, a.warmup, a.drain, seed=1,
                                       twin_seeds=tuple(range(1, a.seeds + 1)))
                    finally:
                        stack.stop()
                p.update(fraction_of_goodput=f, live_pass=pas + 1)
                doc["points"].append(p)
                print(row(p), flush=True)
                Path(a.out).write_text(json.dumps(doc, indent=1))
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print("| arm | point (rate, measured requests) | requests/s live / twin [twin seeds] | p50 TTFT ms live / twin | "
          "p95 TTFT ms live / twin | p95 TPOT ms live / twin | SLO attainment live / twin | live run |")
    print("|---|---|---|---|---|---|---|---|")
    for p in doc["points"]:
        print(row(p))
    print(json.dumps({"wall_s": doc["wall_s"], "points": len(doc["points"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
