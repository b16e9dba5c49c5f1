"""Sweeps over arms x seeds x rates, the goodput search, intervals, and the summary document."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from extproc.twin.arms import ARMS
from extproc.twin.gateway_adapter import ArmUnavailable, routing_available
from extproc.twin.grid import run_grid
from extproc.twin.metrics import bootstrap_ci, goodput_search, paired_ratio_ci, summarize
from extproc.twin.scenario import Scenario
from extproc.workload.spec import SLA_CLASSES

Progress = Callable[[str], None]


def run_point(sc: Scenario, arm: str, rate: float, seed: int) -> dict[str, Any]:
    res = run_grid(sc, ARMS[arm], rate, seed)
    return summarize(sc, res, rate)


def sweep_arm(sc: Scenario, arm: str, progress: Progress | None = None) -> dict[str, Any]:
    """Every grid rate for every seed (curves), then the bisection per seed (goodput)."""
    if not routing_available(ARMS[arm]):
        return {"arm": arm, "title": ARMS[arm].title,
                "unavailable": f"routing profile {ARMS[arm].profile!r} is not in this gateway build"}
    sw = sc.sweep
    points: dict[int, dict[float, dict[str, Any]]] = {s: {} for s in sw.seeds}
    goodputs: list[float] = []
    capped = False
    cpu0 = time.process_time()
    n_req = 0
    for seed in sw.seeds:
        memo = points[seed]

        def passes(rate: float, seed: int = seed, memo: dict = memo) -> bool:
            nonlocal n_req
            if rate not in memo:
                memo[rate] = run_point(sc, arm, rate, seed)
                n_req += memo[rate]["requests"]
            return bool(memo[rate]["passed"])

        for r in sw.rates:  # the whole grid: the curves need every rate
            passes(r)
        g, cap = goodput_search(passes, sw.rates, sw.bisect_steps)
        goodputs.append(g)
        capped = capped or cap
        if progress:
            progress(f"{arm} seed {seed}: goodput {g:.2f} req/s" + (" (top of the sweep)" if cap else ""))
    lo, hi = bootstrap_ci(goodputs)
    # The highest grid rate that passed at all, per seed: where pass/fail is not monotone in the rate (a
    # few realtime misses at low load), it shows how far below it the conservative goodput stopped.
    highest = [max([r for r, p in points[s].items() if p["passed"]], default=0.0) for s in sw.seeds]
    curves = {}
    for r in sw.rates:
        pts = [points[s][r] for s in sw.seeds]
        curves[str(r)] = _mean_point(pts)
    return {
        "arm": arm, "title": ARMS[arm].title,
        "goodput": {"value": sum(goodputs) / len(goodputs), "ci95": [lo, hi], "per_seed": goodputs,
                    "capped_at_top_rate": capped, "highest_passing_rate_per_seed": highest},
        "curves": curves,
        "points": {str(s): {str(r): p for r, p in sorted(points[s].items())} for s in sw.seeds},
        "cpu_seconds": time.process_time() - cpu0,
        "measured_requests": n_req,
    }


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _mean_point(pts: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("attainment", "requests_per_s", "output_tokens_per_s", "prompt_tokens_sent", "prompt_tokens_to_gpu",
            "prompt_tokens_processed", "prefix_cache_hit_rate", "preemptions", "rewrites", "retention",
            "retention_of_compressed", "compressor_cpu_s_per_request", "ttft_p95_ms", "decision_us")
    out: dict[str, Any] = {k: _mean([p.get(k) for p in pts]) for k in keys}
    out["pass_share"] = sum(1 for p in pts if p["passed"]) / len(pts)
    out["classes"] = {
        c: {k: _mean([p["classes"][c][k] for p in pts]) for k in ("attainment", "ttft_p99_ms", "tpot_p99_ms", "ttft_p95_ms")}
        for c in SLA_CLASSES
    }
    return out


def compare(results: dict[str, dict[str, Any]], sc: Scenario) -> dict[str, Any]:
    """Goodput ratios with paired-seed intervals, and per-class attainment against B1 at B1's goodput."""
    out: dict[str, Any] = {}
    ok = {k: v for k, v in results.items() if "goodput" in v}
    for target in ("R+C", "R", "C"):
        for base in ("B1", "B2", "B0"):
            if target in ok and base in ok:
                v, lo, hi = paired_ratio_ci(ok[target]["goodput"]["per_seed"], ok[base]["goodput"]["per_seed"])
                out[f"{target}/{base}"] = {"value": v, "ci95": [lo, hi]}
    if "B1" in ok:
        g = ok["B1"]["goodput"]["value"]
        at = max([r for r in sc.sweep.rates if r <= g] or [sc.sweep.rates[0]])
        cls: dict[str, Any] = {"rate": at}
        for k, v in ok.items():
            c = v["curves"][str(at)]["classes"]
            cls[k] = {x: c[x]["attainment"] for x in SLA_CLASSES}
        b = cls["B1"]
        cls["worst_loss_vs_B1_points"] = {
            k: max(100 * ((b[x] or 0) - (cls[k][x] or 0)) for x in SLA_CLASSES) for k in ok
        }
        out["class_attainment_at_B1_goodput"] = cls
    return out


def run_experiment(sc: Scenario, arms: Sequence[str], progress: Progress | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    results = {}
    for a in arms:
        try:
            results[a] = sweep_arm(sc, a, progress)
        except ArmUnavailable as exc:
            results[a] = {"arm": a, "unavailable": str(exc)}
    return {
        "scenario": sc.model_dump(mode="json"),
        "arms": results,
        "compare": compare(results, sc),
        "wall_seconds": time.perf_counter() - t0,
    }
