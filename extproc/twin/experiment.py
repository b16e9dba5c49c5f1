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


def sweep_seed(sc: Scenario, arm: str, seed: int) -> tuple[dict[float, dict[str, Any]], float, bool, float]:
    """One seed of one arm: every grid rate (the curves need them all), then the bisection (goodput).
    Returns (points by rate, goodput, capped, CPU seconds). Independent of every other seed and arm."""
    cpu0 = time.process_time()
    memo: dict[float, dict[str, Any]] = {}

    def passes(rate: float) -> bool:
        if rate not in memo:
            memo[rate] = run_point(sc, arm, rate, seed)
        return bool(memo[rate]["passed"])

    for r in sc.sweep.rates:
        passes(r)
    g, cap = goodput_search(passes, sc.sweep.rates, sc.sweep.bisect_steps)
    return memo, g, cap, time.process_time() - cpu0


def _sweep_task(args: tuple[Scenario, str, int]) -> tuple[str, int, tuple[Any, ...]]:
    sc, arm, seed = args
    return arm, seed, sweep_seed(sc, arm, seed)


def assemble_arm(sc: Scenario, arm: str, per_seed: dict[int, tuple[Any, ...]]) -> dict[str, Any]:
    sw = sc.sweep
    points = {s: per_seed[s][0] for s in sw.seeds}
    goodputs = [per_seed[s][1] for s in sw.seeds]
    capped = any(per_seed[s][2] for s in sw.seeds)
    lo, hi = bootstrap_ci(goodputs)
    # The highest grid rate that passed at all, per seed: where pass/fail is not monotone in the rate (a
    # few realtime misses at low load), it shows how far below it the conservative goodput stopped.
    highest = [max([r for r, p in points[s].items() if p["passed"]], default=0.0) for s in sw.seeds]
    curves = {str(r): _mean_point([points[s][r] for s in sw.seeds]) for r in sw.rates}
    return {
        "arm": arm, "title": ARMS[arm].title,
        "goodput": {"value": sum(goodputs) / len(goodputs), "ci95": [lo, hi], "per_seed": goodputs,
                    "capped_at_top_rate": capped, "highest_passing_rate_per_seed": highest},
        "curves": curves,
        "points": {str(s): {str(r): p for r, p in sorted(points[s].items())} for s in sw.seeds},
        "cpu_seconds": sum(per_seed[s][3] for s in sw.seeds),
        "measured_requests": sum(p["requests"] for s in sw.seeds for p in points[s].values()),
    }


def sweep_arm(sc: Scenario, arm: str, progress: Progress | None = None) -> dict[str, Any]:
    """Every grid rate for every seed (curves), then the bisection per seed (goodput)."""
    if not routing_available(ARMS[arm]):
        return {"arm": arm, "title": ARMS[arm].title,
                "unavailable": f"routing profile {ARMS[arm].profile!r} is not in this gateway build"}
    per_seed = {}
    for seed in sc.sweep.seeds:
        per_seed[seed] = sweep_seed(sc, arm, seed)
        if progress:
            g, cap = per_seed[seed][1], per_seed[seed][2]
            progress(f"{arm} seed {seed}: goodput {g:.2f} req/s" + (" (top of the sweep)" if cap else ""))
    return assemble_arm(sc, arm, per_seed)


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


def run_experiment(sc: Scenario, arms: Sequence[str], progress: Progress | None = None, workers: int = 1) -> dict[str, Any]:
    """Every arm x seed; with workers > 1 the (arm, seed) sweeps run in that many processes (each one is
    independent and deterministic, so the numbers do not depend on the worker count)."""
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    todo = []
    for a in arms:
        if not routing_available(ARMS[a]):
            results[a] = {"arm": a, "title": ARMS[a].title,
                          "unavailable": f"routing profile {ARMS[a].profile!r} is not in this gateway build"}
        else:
            todo += [(sc, a, s) for s in sc.sweep.seeds]
    done: dict[str, dict[int, tuple[Any, ...]]] = {}
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp  # noqa: PLC0415

        with mp.get_context("fork").Pool(workers) as pool:
            for arm, seed, res in pool.imap_unordered(_sweep_task, todo):
                done.setdefault(arm, {})[seed] = res
                if progress:
                    progress(f"{arm} seed {seed}: goodput {res[1]:.2f} req/s" + (" (top of the sweep)" if res[2] else ""))
    else:
        for task in todo:
            arm, seed, res = _sweep_task(task)
            done.setdefault(arm, {})[seed] = res
            if progress:
                progress(f"{arm} seed {seed}: goodput {res[1]:.2f} req/s" + (" (top of the sweep)" if res[2] else ""))
    for a in arms:
        if a in done:
            results[a] = assemble_arm(sc, a, done[a])
    results = {a: results[a] for a in arms}
    return {
        "scenario": sc.model_dump(mode="json"),
        "arms": results,
        "compare": compare(results, sc),
        "wall_seconds": time.perf_counter() - t0,
        "workers": workers,
    }
