"""Sweeps over arms x seeds x rates, the goodput search, intervals, and the summary document.

The goodput statistic is the scenario's `goodput.statistic`:

* `wilson` (default): at each rate the seeds' runs are pooled; a rate passes when every class with a
  target has the lower end of its Wilson interval at or above the target (`metrics.pooled_pass`). The
  search runs the grid for every seed, then bisects between the last passing and the first failing grid
  rate, every seed at each midpoint. Goodput is the highest evaluated rate below the first failing one.
  Its interval, and every ratio's, is a bootstrap over requests: each run's per-class counts are redrawn
  (met* ~ Binomial(n, met/n), which is resampling that run's requests of the class with replacement), the
  statistic recomputed at the evaluated rates; ratio intervals pair replicate b of one arm with replicate
  b of the other. The bootstrap over seeds (seeds resampled with replacement) is reported beside it
  (`ci95_over_seeds`): with five seeds, a replicate that repeats the one seed with a rare miss triples
  that miss, so at a 99% target its low end says more about the seed count than about the arm.
* `per_seed` (the rule before): a seed's run passes on its own (`overall`, `realtime` shares), goodput is
  searched per seed and averaged, with a bootstrap over the per-seed goodputs.

With `wilson` the per-seed rule is also evaluated on the same runs (`goodput_per_seed_rule`), so the
change of figures is visible.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.gateway_adapter import prepare_compression, routing_available
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.metrics import (
    bootstrap_ci,
    class_shares,
    goodput_search,
    paired_ratio_ci,
    pooled_counts,
    pooled_pass,
    run_duration,
    summarize,
    wilson_lower,
)
from extproc.tools.twin.scenario import Scenario
from extproc.tools.workload.spec import SLA_CLASSES

Progress = Callable[[str], None]
BOOTSTRAP = 2000


def scenario_at(sc: Scenario, rate: float) -> Scenario:
    """The scenario with the run length the statistic needs at this rate."""
    d = run_duration(sc, rate)
    if d == sc.sweep.duration_s:
        return sc
    return sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"duration_s": d})})


def run_point(sc: Scenario, arm: str, rate: float, seed: int) -> dict[str, Any]:
    rsc = scenario_at(sc, rate)
    t0 = time.process_time()
    res = run_grid(rsc, ARMS[arm], rate, seed)
    out = summarize(rsc, res, rate)
    out["duration_s"] = rsc.sweep.duration_s
    out["cpu_seconds"] = time.process_time() - t0
    out["simulated_requests"] = len(res.flights)
    return out


def _task(args: tuple[Scenario, str, int, float]) -> tuple[str, int, float, dict[str, Any]]:
    sc, arm, seed, rate = args
    return arm, seed, rate, run_point(sc, arm, rate, seed)


def _run(tasks: list[tuple[Scenario, str, int, float]], workers: int, out: dict[tuple[str, int, float], dict[str, Any]],
         progress: Progress | None = None) -> None:
    todo = [t for t in tasks if (t[1], t[2], t[3]) not in out]
    if workers > 1 and len(todo) > 1:
        # The shipped ranker runs here, once, before the fork: the workers inherit its decisions.
        for sc, arm in {(t[0].model_dump_json(), t[1]): (t[0], t[1]) for t in todo}.values():
            prepare_compression(sc, ARMS[arm])
        with mp.get_context("fork").Pool(workers) as pool:
            for arm, seed, rate, p in pool.imap_unordered(_task, todo, chunksize=1):
                out[(arm, seed, rate)] = p
    else:
        for t in todo:
            arm, seed, rate, p = _task(t)
            out[(arm, seed, rate)] = p
    if progress and todo:
        progress(f"{len(todo)} runs done ({len(out)} in all)")


# ---- the statistic over evaluated rates --------------------------------------------------------------
def _walk(passes: Sequence[tuple[float, bool]]) -> float:
    """Goodput from evaluated (rate, passed) pairs: the highest rate below the first that fails."""
    g = 0.0
    for r, ok in sorted(passes):
        if not ok:
            break
        g = r
    return g


def _wilson_goodput(sc: Scenario, pts: dict[float, list[dict[str, Any]]], seeds_idx: Sequence[int]) -> float:
    return _walk([(r, pooled_pass(sc.goodput, [ps[i] for i in seeds_idx])[0]) for r, ps in pts.items()])


def _request_boots(sc: Scenario, arm: str, pts: dict[float, list[dict[str, Any]]], n_boot: int) -> list[float]:
    """Goodput of `n_boot` request-level bootstrap replicates: every run's per-class met count redrawn
    as Binomial(n, met/n), the seeds pooled, the Wilson rule and the walk as for the point estimate.
    Deterministic: the generator is seeded from the arm's name."""
    rule = sc.goodput
    rng = np.random.default_rng(zlib.crc32(arm.encode()))
    rates = sorted(pts)
    ok = np.ones((n_boot, len(rates)), dtype=bool)
    for j, r in enumerate(rates):
        for c, target in rule.targets.items():
            n = np.array([p["classes"][c]["requests"] for p in pts[r]], dtype=np.int64)
            if n.sum() == 0:
                continue
            met = np.array([p["classes"][c]["met"] for p in pts[r]], dtype=np.int64)
            k = rng.binomial(n, np.where(n > 0, met / np.maximum(n, 1), 0.0), size=(n_boot, len(n))).sum(axis=1)
            lb = np.array([wilson_lower(int(x), int(n.sum()), rule.confidence) for x in k])
            ok[:, j] &= lb >= target
    out = []
    for b in range(n_boot):
        out.append(_walk([(r, bool(ok[b, j])) for j, r in enumerate(rates)]))
    return out


def sweep_arm(sc: Scenario, arm: str, runs: dict[tuple[str, int, float], dict[str, Any]], workers: int = 1,
              progress: Progress | None = None) -> None:
    """Run whatever the arm's goodput search needs into `runs` (grid, then bisection)."""
    sw = sc.sweep
    _run([(sc, arm, s, r) for r in sw.rates for s in sw.seeds], workers, runs, progress)
    if sc.goodput.statistic == "wilson":
        def passes(rate: float) -> bool:
            _run([(sc, arm, s, rate) for s in sw.seeds], workers, runs)
            return pooled_pass(sc.goodput, [runs[(arm, s, rate)] for s in sw.seeds])[0]

        goodput_search(passes, sw.rates, sw.bisect_steps)
    else:
        for seed in sw.seeds:
            def passes1(rate: float, seed: int = seed) -> bool:
                _run([(sc, arm, seed, rate)], 1, runs)
                return bool(runs[(arm, seed, rate)]["passed"])

            goodput_search(passes1, sw.rates, sw.bisect_steps)


def assemble_arm(sc: Scenario, arm: str, runs: dict[tuple[str, int, float], dict[str, Any]],
                 resamples: list[list[int]]) -> dict[str, Any]:
    sw = sc.sweep
    seeds = list(sw.seeds)
    rates = sorted({r for (a, _, r) in runs if a == arm})
    # Rates every seed was run at (the grid, the pooled bisection); per-seed bisection points are extra.
    full = [r for r in rates if all((arm, s, r) in runs for s in seeds)]
    pts = {r: [runs[(arm, s, r)] for s in seeds] for r in full}
    per_seed_rule = []
    for s in seeds:
        own = sorted(r for r in rates if (arm, s, r) in runs)
        per_seed_rule.append(_walk([(r, bool(runs[(arm, s, r)]["passed"])) for r in own]))
    if sc.goodput.statistic == "wilson":
        value = _wilson_goodput(sc, pts, range(len(seeds)))
        seed_boots = [_wilson_goodput(sc, pts, idx) for idx in resamples]
        boots = _request_boots(sc, arm, pts, len(resamples))
        lo, hi = _percentile_ci(boots)
        seeds_ci = list(_percentile_ci(seed_boots))
        capped = value >= max(full)
        name = (f"wilson: pooled over {len(seeds)} seeds, {sc.goodput.confidence:.0%} lower bound of each class's "
                f"attainment >= its target ({', '.join(f'{c} {t:g}' for c, t in sc.goodput.targets.items())}); "
                "interval: bootstrap over requests (over seeds: ci95_over_seeds)")
    else:
        value = sum(per_seed_rule) / len(per_seed_rule)
        boots = seed_boots = [sum(per_seed_rule[i] for i in idx) / len(idx) for idx in resamples]
        lo, hi = bootstrap_ci(per_seed_rule)
        seeds_ci = [lo, hi]
        capped = any(g >= max(sw.rates) for g in per_seed_rule)
        name = f"per_seed: each seed's run passes on its own (all >= {sc.goodput.overall:g}, realtime >= {sc.goodput.realtime:g})"
    at = max([r for r in full if r <= value] or [full[0]])
    counts = pooled_counts(pts[at])
    curves = {str(r): _pooled_point(sc, pts[r]) for r in full}
    return {
        "arm": arm, "title": ARMS[arm].title,
        "goodput": {"value": value, "ci95": [lo, hi], "ci95_over_seeds": seeds_ci, "statistic": name,
                    "per_seed": per_seed_rule, "capped_at_top_rate": capped,
                    "at_rate": at, "requests_per_class_at_goodput": {c: counts[c][1] for c in SLA_CLASSES}},
        "goodput_per_seed_rule": {"value": sum(per_seed_rule) / len(per_seed_rule), "per_seed": per_seed_rule,
                                  "ci95": list(bootstrap_ci(per_seed_rule)),
                                  "note": "the rule before, on the same runs (each seed alone: all >= "
                                          f"{sc.goodput.overall:g}, realtime >= {sc.goodput.realtime:g})"},
        # The cost model's predicted vs measured TTFT / TPOT per site at the goodput rate, per seed.
        "prediction_at_goodput": [p.get("prediction") for p in pts[at]],
        "_boots": boots,
        "_seed_boots": seed_boots,
        "curves": curves,
        "points": {str(s): {str(r): runs[(arm, s, r)] for r in rates if (arm, s, r) in runs} for s in seeds},
        "cpu_seconds": sum(p["cpu_seconds"] for (a, _, _), p in runs.items() if a == arm),
        "simulated_requests": sum(p["simulated_requests"] for (a, _, _), p in runs.items() if a == arm),
        "measured_requests": sum(p["requests"] for (a, _, _), p in runs.items() if a == arm),
    }


def _percentile_ci(vals: Sequence[float]) -> tuple[float, float]:
    v = sorted(vals)
    n = len(v)
    return v[int(0.025 * n)], v[min(n - 1, int(0.975 * n))]


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _pooled_point(sc: Scenario, pts: list[dict[str, Any]]) -> dict[str, Any]:
    """One rate, the seeds together: pooled attainment per class with its Wilson interval's lower end,
    and the seeds' mean of the other figures."""
    keys = ("attainment", "requests_per_s", "output_tokens_per_s", "prompt_tokens_sent", "prompt_tokens_to_gpu",
            "prompt_tokens_processed", "prefix_cache_hit_rate", "preemptions", "rewrites", "retention",
            "retention_of_compressed", "compressor_cpu_s_per_request", "ttft_p95_ms", "decision_us")
    out: dict[str, Any] = {k: _mean([p.get(k) for p in pts]) for k in keys}
    ranked = [p["coarse_rankings"] for p in pts if "coarse_rankings" in p]
    if ranked:
        # The coarse step's rankings with the measured cost model (compcost.py), the seeds pooled.
        out["coarse_rankings"] = {m: sum(r.get(m, 0) for r in ranked) for m in sorted({m for r in ranked for m in r})}
        wanted = sum(v for m, v in out["coarse_rankings"].items() if m in ("hybrid", "bm25(busy)", "bm25(timeout)"))
        fell = out["coarse_rankings"].get("bm25(busy)", 0) + out["coarse_rankings"].get("bm25(timeout)", 0)
        out["dense_fallback_share"] = fell / wanted if wanted else None
    ok, detail = pooled_pass(sc.goodput, pts)
    out["passed"] = ok
    out["pass_share"] = sum(1 for p in pts if p["passed"]) / len(pts)
    counts = pooled_counts(pts)
    out["classes"] = {}
    for c in SLA_CLASSES:
        k, n = counts[c]
        out["classes"][c] = {
            "requests": n, "met": k, "attainment": k / n if n else None,
            "lower_bound": wilson_lower(k, n, sc.goodput.confidence) if n else None,
            **{x: _mean([p["classes"][c][x] for p in pts]) for x in ("ttft_p99_ms", "tpot_p99_ms", "ttft_p95_ms")},
        }
    return out


def compare(results: dict[str, dict[str, Any]], sc: Scenario) -> dict[str, Any]:
    """Goodput ratios with paired bootstrap intervals (the same seed resamples for both arms), and
    per-class attainment against B1 at B1's goodput."""
    out: dict[str, Any] = {"statistic": sc.goodput.statistic}
    ok = {k: v for k, v in results.items() if "goodput" in v}
    pairs = [("R+C", "B1"), ("R+C", "C"), ("R", "B1"), ("R+C", "B2"), ("R+C", "B0"), ("C", "B1"), ("R", "B2"), ("R", "B0"),
             ("B1", "B0"), ("B2", "B0"), ("R+C", "T+C")]
    for target, base in pairs:
        if target in ok and base in ok:
            a, b = ok[target], ok[base]
            bv = b["goodput"]["value"]
            if not bv:
                # A baseline with no goodput has no ratio (and NaN is not JSON): say so instead.
                out[f"{target}/{base}"] = {"value": None, "ci95": [None, None], "ci95_over_seeds": [None, None],
                                           "undefined": f"{base} has goodput 0"}
                continue
            ratios = [x / y for x, y in zip(a["_boots"], b["_boots"]) if y > 0]
            lo, hi = _percentile_ci(ratios) if ratios else (None, None)
            sr = [x / y for x, y in zip(a["_seed_boots"], b["_seed_boots"]) if y > 0]
            slo, shi = _percentile_ci(sr) if sr else (None, None)
            out[f"{target}/{base}"] = {"value": a["goodput"]["value"] / bv, "ci95": [lo, hi],
                                       "ci95_over_seeds": [slo, shi]}
            if sc.goodput.statistic == "per_seed":
                v, lo2, hi2 = paired_ratio_ci(a["goodput"]["per_seed"], b["goodput"]["per_seed"])
                out[f"{target}/{base}"] = {"value": v, "ci95": [lo2, hi2]}
    if "B1" in ok:
        at = ok["B1"]["goodput"]["at_rate"]
        cls: dict[str, Any] = {"rate": at}
        for k, v in ok.items():
            c = v["curves"].get(str(at))
            if c is not None:
                cls[k] = {x: c["classes"][x]["attainment"] for x in SLA_CLASSES}
        out["class_attainment_at_B1_goodput"] = cls
    return out


def run_experiment(sc: Scenario, arms: Sequence[str], progress: Progress | None = None, workers: int = 1,
                   scenario_for: Callable[[str, Scenario], Scenario] | None = None) -> dict[str, Any]:
    """Every arm's goodput search. With workers > 1 the runs go to that many processes (each run is
    independent and deterministic, so the numbers do not depend on the worker count). `scenario_for`
    (arm, scenario) -> the scenario that arm is swept with, asked just before its sweep (the demo hands
    the compression arms the coarse step's costs it measured meanwhile)."""
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    runs: dict[tuple[str, int, float], dict[str, Any]] = {}
    results: dict[str, Any] = {}
    rng = random.Random(0)
    k = len(sc.sweep.seeds)
    resamples = [[rng.randrange(k) for _ in range(k)] for _ in range(BOOTSTRAP)]
    for a in arms:
        if not routing_available(ARMS[a]):
            results[a] = {"arm": a, "title": ARMS[a].title,
                          "unavailable": f"routing profile {ARMS[a].profile!r} is not in this gateway build"}
            continue
        asc = scenario_for(a, sc) if scenario_for is not None else sc
        sweep_arm(asc, a, runs, workers)
        results[a] = assemble_arm(asc, a, runs, resamples)
        if progress:
            g = results[a]["goodput"]
            progress(f"{a}: goodput {g['value']:.2f} req/s [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]"
                     + (" (top of the sweep)" if g["capped_at_top_rate"] else ""))
    doc = {
        "scenario": sc.model_dump(mode="json"),
        "class_shares": class_shares(sc.workload),
        "arms": results,
        "compare": compare(results, sc),
        "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds_main": time.process_time() - cpu0,
        "simulated_requests": sum(p["simulated_requests"] for p in runs.values()),
        "run_cpu_seconds": sum(p["cpu_seconds"] for p in runs.values()),
        "workers": workers,
    }
    for v in results.values():
        v.pop("_boots", None)
        v.pop("_seed_boots", None)
    return doc
