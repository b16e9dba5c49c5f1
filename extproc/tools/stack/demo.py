"""`aigrid demo`: goodput at SLO per arm in the grid twin, then a short live confirmation through real
Envoy, ext_proc, Redis and simulated GPU sites.

1. Twin sweep (virtual time, `extproc/tools/twin/`): the reference scenario's main arms x rates x seeds; goodput
   (highest rate at which >= 90% of requests, >= 99% of realtime ones, meet their SLO) with 95% bootstrap
   intervals over the seeds; charts.
2. Live: the local grid (`extproc/tools/stack/local.py`) with its simulated sites time-dilated (every GPU
   step k x slower, `twin/dilation.py`), at two fractions of an arm's goodput, and the dilated twin under
   the same requests: requests/s, p95 TTFT / TPOT and SLO attainment side by side
   (`twin_vs_live.points[]`, `stack/calibrate.py`).
Before the sweep it measures the gateway's coarse compression step on this machine and the twin charges
those costs (`twin/compcost.py`).
Writes `<out>/summary.json`. Every process is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from extproc.tools.stack.local import LocalStack
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.burst import traced_burst
from extproc.tools.stack.calibrate import live_point, live_stack
from extproc.tools.twin.dilation import dilated
from extproc.tools.twin.experiment import run_experiment
from extproc.tools.twin.gateway_adapter import measure_compressor
from extproc.tools.twin.plots import burst, write_charts
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario
from extproc.tools.workload.rag import build_corpus

MAIN_ARMS = ("B1", "B2", "R", "C", "R+C")
ALL_ARMS = ("B0", "B1", "B2", "R", "C", "R+C", "R+C-noSLA", "R+C-fixed", "R-base", "R-noRes", "R-noPrefix", "R-noHold", "S", "S+C",
            "T", "T+C")


def _twin(arms: tuple[str, ...], seeds: int, long: bool, console: Console, duration_s: float | None = None,
          measure: bool = True) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    sc = load_scenario(REFERENCE_SCENARIO)
    dur = duration_s or (40.0 if long else sc.sweep.duration_s)
    sw = sc.sweep.model_copy(update={"seeds": list(range(1, seeds + 1)), "duration_s": dur,
                                     "warmup_s": min(sc.sweep.warmup_s, dur / 4)})
    sc = sc.model_copy(update={"sweep": sw, "arms": list(arms)})
    measured: dict[str, Any] = {}
    dense: dict[str, Any] = {}
    worker: subprocess.Popen[str] | None = None
    if measure and any(ARMS[a].compress for a in arms):
        # The coarse step's costs on this machine (compcost.py), charged by the twin in the compression arms
        # and used by their rewriter (coarse_tokens_per_s: the same figure in the decision). BM25 first, alone
        # (process CPU time); the embedding model's pass (its own thread's CPU time, and a model to load)
        # runs in its own process while the twin sweeps the arms that do not compress.
        corpus = build_corpus(sc.workload.rag)
        measured = measure_compressor(corpus, ranker="bm25")
        console.print(f"  coarse step here: {measured['pipeline_ms_per_prompt']} ms of CPU per RAG prompt with BM25 "
                      f"({measured['coarse_tokens_per_s']:,} tokens/s; BM25 alone {measured['lexical_tokens_per_s']:,})")
        worker = subprocess.Popen([sys.executable, "-m", "extproc.tools.twin.measure_dense", "auto"],  # noqa: S603
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    merged = [worker is None]

    def scenario_for(arm: str, base: Any) -> Any:
        if not ARMS[arm].compress or not measured:
            return base
        if not merged[0]:
            assert worker is not None
            try:
                out, _ = worker.communicate(timeout=300)
                dense.update(json.loads(out.strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
                worker.kill()
                dense.update(dense_cold_s=None, dense_warm_s=None, dense=f"not measured: {exc}")
            measured.update(dense, ranker="auto")
            merged[0] = True
            console.print(f"  embedding pass here: {dense.get('dense_cold_s')} s cold / {dense.get('dense_warm_s')} s warm "
                          "(the gateway's default ranker for English; BM25 when its thread is busy)")
        costs = {k: measured[k] for k in ("coarse_tokens_per_s", "lexical_tokens_per_s", "dense_cold_s", "dense_warm_s", "ranker")}
        return base.model_copy(update={"compressor": base.compressor.model_copy(update=costs)})

    try:
        doc = run_experiment(sc, arms, progress=lambda m: console.print(f"  twin: {m}"), workers=min(2, os.cpu_count() or 1),
                             scenario_for=scenario_for)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
    if measured:
        sc = scenario_for("C", sc)
    return sc, doc, measured


def _live(sc: Any, doc: dict[str, Any], arm: str, dilation: float, fractions: tuple[float, ...], seconds: float,
          drain_s: float, workdir: Path, envoy_port: int, admin_port: int, console: Console) -> dict[str, Any]:
    """Twin against live on the time-dilated grid (`stack/calibrate.py`): `arm` at `fractions` of its twin
    goodput on the reference grid / dilation, the same requests on both sides."""
    g = doc["arms"].get(arm, {}).get("goodput", {}).get("value")
    if not g:
        return {"skipped": f"arm {arm} has no twin goodput in this run"}
    dsc = dilated(sc, dilation)
    warm = min(5.0, seconds / 4)
    out: dict[str, Any] = {"arm": arm, "dilation": dilation, "seconds": seconds, "warmup_s": warm, "drain_s": drain_s,
                           "goodput_basis": f"the twin's goodput of {arm} on the reference grid / dilation "
                                            f"({g:g} / {dilation:g} = {g / dilation:.3f} req/s)",
                           "points": []}
    for f in fractions:
        rate = f * g / dilation
        # A fresh stack per point, as every twin run starts (empty prefix caches, no gateway state).
        with console.status("starting the local grid (Redis, dilated simulated sites, agents, ext_proc, Envoy)..."):
            stack = live_stack(dsc, arm, workdir, envoy_port, admin_port)
            stack.start()
        try:
            p = live_point(stack, dsc, arm, rate, seconds, warm, drain_s, seed=1, twin_seeds=(1,))
        finally:
            stack.stop()
        p.pop("pairs", None)
        p.pop("twin_seeds", None)
        p["fraction_of_goodput"] = f
        out["points"].append(p)
        lv, tw = p["live"], p["twin"]
        if not p["live_valid"]:
            console.print(f"  [yellow]live run at {rate:.2f} req/s is INVALID (a simulated site fell behind wall time): "
                          + "; ".join(f"{k}: {v.get('reason')}" for k, v in p["sim_timing"].items() if not v.get("valid")))
        console.print(f"  {arm} at {100 * f:.0f}% of goodput ({rate:.2f} req/s, {p['requests']} requests): requests/s "
                      f"{lv['requests_per_s']:.2f} live vs {tw['requests_per_s']:.2f} twin; p95 TTFT {lv['ttft_p95_ms']} vs "
                      f"{tw['ttft_p95_ms']} ms; p95 TPOT {lv['tpot_p95_ms']} vs {tw['tpot_p95_ms']} ms; "
                      f"attainment {lv['attainment']} vs {tw['attainment']}")
    return out


def burst_trace(sc: Any, arm: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """One traced run of `arm` with bursty arrivals (Gamma, CV 2) at 80% of its goodput: site pressure as
    the gateway saw it, and the keep-rate chosen per RAG request, over time."""

    v = doc["arms"].get(arm, {})
    if "goodput" not in v or v["goodput"]["value"] <= 0:
        return None
    return traced_burst(sc, arm, 0.8 * v["goodput"]["value"])


def run_demo(workdir: Path, out_dir: Path, *, envoy_port: int = 10000, admin_port: int = 9901, long: bool = False,
             arms: tuple[str, ...] | None = None, seeds: int = 5, live_fractions: tuple[float, ...] = (0.5, 1.0),
             live_seconds: float = 15.0, live_drain_s: float = 30.0, live_arm: str = "B1", dilation: float = 5.0,
             live: bool = True, twin_duration_s: float | None = None, measure: bool = True) -> dict[str, Any]:

    console = Console()
    t0 = time.monotonic()
    stack = LocalStack(workdir, envoy_port=envoy_port, admin_port=admin_port, upstream="sim")
    if live:
        stack._check_ports()  # a taken port is a clear error before minutes of twin work
    arms = arms or (ALL_ARMS if long else MAIN_ARMS)
    console.rule("[bold]twin: goodput at SLO per arm (virtual time)")
    sc, doc, measured = _twin(arms, seeds, long, console, twin_duration_s, measure)
    burst_doc = burst_trace(sc, "R+C" if "R+C" in arms else arms[-1], doc)
    summary: dict[str, Any] = {
        "scenario": "extproc/tools/twin/reference.yaml" + (" (--long: 40 s per run)" if long else ""),
        "seeds": seeds,
        "statistic": sc.goodput.statistic,
        "arms": {},
        "compare": doc["compare"],
        "compressor": {"used": sc.compressor.model_dump(), "measured_now": measured or None,
                       "note": "coarse-only pass with BM25 (process CPU per capped document token), BM25 alone, "
                               "and the embedding model's pass on its own thread (cold / warm sentence vectors), "
                               "measured on this machine; the twin charges them as queued resources (compcost.py)"},
    }
    for k, v in doc["arms"].items():
        if "goodput" not in v:
            summary["arms"][k] = {"unavailable": v.get("unavailable")}
            continue
        g = v["goodput"]
        top = max(v["curves"], key=float)
        at = max((r for r in v["curves"] if float(r) <= max(g["value"], float(min(v["curves"], key=float)))), key=float)
        c = v["curves"][at]
        summary["arms"][k] = {
            "title": v["title"],
            "goodput": {"value": g["value"], "ci95": g["ci95"], "ci95_over_seeds": g["ci95_over_seeds"],
                        "statistic": g["statistic"], "per_seed": g["per_seed"], "capped_at_top_rate": g["capped_at_top_rate"],
                        "requests_per_class_at_goodput": g["requests_per_class_at_goodput"],
                        "per_seed_rule": v["goodput_per_seed_rule"]["value"]},
            "at_rate": float(at),
            "at_goodput": {key: c[key] for key in ("attainment", "requests_per_s", "output_tokens_per_s", "prompt_tokens_sent",
                                                    "prompt_tokens_to_gpu", "prompt_tokens_processed", "prefix_cache_hit_rate",
                                                    "preemptions", "rewrites", "retention", "retention_of_compressed",
                                                    "compressor_cpu_s_per_request")},
            **({"coarse_rankings_at_goodput": c["coarse_rankings"], "dense_fallback_share_at_goodput": c["dense_fallback_share"]}
               if "coarse_rankings" in c else {}),
            "class_attainment_at_goodput": {x: c["classes"][x]["attainment"] for x in c["classes"]},
            "top_rate": float(top),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["charts"] = write_charts(doc, out_dir)
    if burst_doc is not None:

        summary["charts"]["burst"] = str(burst(burst_doc, out_dir / "burst.png"))
        summary["burst"] = {k: v for k, v in burst_doc.items() if k not in ("timeline", "keep_rates")}
    (out_dir / "twin.json").write_text(json.dumps(doc, indent=1))
    if live:
        console.rule(f"[bold]live confirmation through Envoy ({live_arm} arm, sites {dilation:g}x time-dilated)")
        summary["twin_vs_live"] = _live(sc, doc, live_arm, dilation, live_fractions, live_seconds, live_drain_s,
                                        workdir, envoy_port, admin_port, console)
    else:
        summary["twin_vs_live"] = {"skipped": "--no-live"}
    summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    console.rule("[bold]goodput at SLO (requests/s), pooled Wilson rule, 95% bootstrap interval over requests")
    for k, v in summary["arms"].items():
        if "goodput" in v:
            g = v["goodput"]
            cap = " (top of sweep: a lower bound)" if g["capped_at_top_rate"] else ""
            console.print(f"  {k:9s} {g['value']:7.2f}  [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]{cap}")
        else:
            console.print(f"  {k:9s} not run: {v['unavailable']}")
    for k, v in doc["compare"].items():
        if "/" in k:
            if v["value"] is None or None in v["ci95"]:
                console.print(f"  {k:9s} undefined ({v.get('undefined', 'no interval')})")
            else:
                console.print(f"  {k:9s} {v['value']:.2f}x  [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    console.print(f"report: {out_dir / 'summary.json'}")
    console.print(f"demo finished in {summary['wall_seconds']:.0f}s; every process stopped")
    return summary
