"""Run figures, SLO attainment, the pass rule, goodput search and bootstrap intervals. Pure."""

from __future__ import annotations

import math
import random
from statistics import NormalDist
from collections.abc import Callable, Sequence
from typing import Any

from extproc.tools.percentile import percentile as _percentile
from extproc.tools.twin.scenario import Scenario
from extproc.tools.workload.spec import SLA_CLASSES


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest rank (q in 0..100): every figure the twin reports is a request's own value."""
    return _percentile(xs, q, "nearest")


def summarize(sc: Scenario, res: Any, rate: float) -> dict[str, Any]:
    """One run's figures over its measured requests (planned in [warmup, duration)). A request that did
    not finish by the drain limit misses its SLO."""
    fl = [f for f in res.flights if f.measured]
    per: dict[str, dict[str, Any]] = {}
    met_all = 0
    ttft_all: list[float] = []
    for cls in SLA_CLASSES:
        slo = sc.slo[cls]
        xs = [f for f in fl if f.req.sla == cls]
        ttft: list[float] = []
        tpot: list[float] = []
        met = 0
        lost = 0
        for f in xs:
            if f.first is None or f.done is None:
                continue
            a = f.first - f.sent
            ttft.append(a)
            n = f.req.output_tokens
            b = (f.done - f.first) / (n - 1) if n > 1 else 0.0
            tpot.append(b)
            if a * 1000 <= slo.ttft_ms and (slo.tpot_ms is None or b * 1000 <= slo.tpot_ms):
                # In time, but a compressed prompt that lost a gold fact cannot be answered: a miss.
                if f.retained is False:
                    lost += 1
                else:
                    met += 1
        met_all += met
        ttft_all += ttft
        per[cls] = {
            "requests": len(xs), "met": met, "attainment": met / len(xs) if xs else None,
            "unfinished": len(xs) - len(ttft), "in_time_but_gold_lost": lost,
            "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p95_ms": _ms(percentile(ttft, 95)),
            "ttft_p99_ms": _ms(percentile(ttft, 99)), "tpot_p99_ms": _ms(percentile(tpot, 99)),
        }
    n = len(fl)
    window = sc.sweep.duration_s - sc.sweep.warmup_s
    done = [f for f in fl if f.done is not None]
    rag = [f for f in fl if f.req.kind == "rag"]
    comp = [f for f in rag if f.kept is not None]
    retained = [f for f in rag if f.retained]
    att = met_all / n if n else 0.0
    rt = per["realtime"]["attainment"]
    rule = sc.goodput
    passed = n > 0 and att >= rule.overall and (rt is None or rt >= rule.realtime)
    sites = res.sites
    return {
        "rate": rate,
        "requests": n,
        "passed": passed,
        "attainment": att,
        "classes": per,
        "requests_per_s": len(done) / window if window > 0 else None,
        "output_tokens_per_s": sum(f.req.output_tokens for f in done) / window if window > 0 else None,
        "ttft_p95_ms": _ms(percentile(ttft_all, 95)),
        # Prompt tokens, side by side: as the clients sent them, as they reached the GPUs (after
        # compression), and (below) as the GPUs processed them (after prefix-cache hits).
        "prompt_tokens_sent": sum(f.req.prompt_tokens for f in fl),
        "prompt_tokens_to_gpu": sum(f.prompt_gpu for f in fl),
        "prompt_tokens_computed_all": sum(s["prompt_tokens_computed"] for s in sites.values()),
        # Prefill the GPUs actually did for the measured requests: what reached them minus prefix-cache hits.
        "prompt_tokens_processed": sum(f.prompt_gpu - f.cached for f in fl if f.first is not None),
        "prefix_cache_hit_rate": (sum(s["prefix_cache_hits"] for s in sites.values())
                                  / max(1, sum(s["prefix_cache_queries"] for s in sites.values()))),
        "preemptions": sum(s["preemptions"] for s in sites.values()),
        "rewrites": len(comp),
        "rag_requests": len(rag),
        "retention": len(retained) / len(rag) if rag else None,
        "retention_of_compressed": (sum(1 for f in comp if f.retained) / len(comp)) if comp else None,
        "compressor_cpu_s_per_request": sum(f.cpu_s for f in fl) / n if n else 0.0,
        **_rankings(fl),
        "site_share": {s: sum(1 for f in fl if f.site == s) / n if n else 0.0 for s in sites},
        "decision_us": 1e6 * res.decision_seconds / res.decisions if res.decisions else None,
        "prediction": prediction_error(fl),
    }


def prediction_error(flights: Sequence[Any]) -> dict[str, Any] | None:
    """The cost model's predicted TTFT / TPOT against what the twin measured, per site, over finished
    requests that carry a prediction: bias (mean of predicted − actual, ms; < 0: it predicted too little)
    and the 90th percentile of |predicted − actual|. None for arms without a cost model."""
    by: dict[str, dict[str, list[float]]] = {}
    for f in flights:
        if f.pred_ttft_ms is None or f.first is None or f.done is None:
            continue
        e = by.setdefault(f.site, {"ttft": [], "tpot": []})
        e["ttft"].append(f.pred_ttft_ms - 1000 * (f.first - f.sent))
        n = f.req.output_tokens
        if f.pred_tpot_ms is not None and n > 1:
            e["tpot"].append(f.pred_tpot_ms - 1000 * (f.done - f.first) / (n - 1))
    if not by:
        return None
    out: dict[str, Any] = {}
    for site, e in sorted(by.items()):
        out[site] = {"requests": len(e["ttft"])}
        for k, xs in e.items():
            if xs:
                out[site][f"{k}_bias_ms"] = round(sum(xs) / len(xs), 2)
                out[site][f"{k}_p90_abs_err_ms"] = _ms_raw(percentile([abs(x) for x in xs], 90))
    return out


def _ms_raw(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 2)


def goodput_search(passes: Callable[[float], bool], rates: Sequence[float], bisect_steps: int) -> tuple[float, bool]:
    """The highest rate that passes below the first one that fails, on the grid then by bisection.
    Returns (goodput, capped): capped when even the top rate passed (goodput is then a lower bound);
    0.0 when even the lowest rate failed."""
    lo = 0.0
    hi: float | None = None
    for r in rates:
        if passes(r):
            lo = r
        else:
            hi = r
            break
    if hi is None:
        return lo, True
    for _ in range(bisect_steps):
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo, False


def bootstrap_ci(xs: Sequence[float], stat: Callable[[Sequence[float]], float] | None = None,
                 n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean (or `stat`) over the seeds."""
    if not xs:
        return (float("nan"), float("nan"))
    f = stat or (lambda v: sum(v) / len(v))
    rng = random.Random(seed)
    k = len(xs)
    vals = sorted(f([xs[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    return vals[int(0.025 * n)], vals[min(n - 1, int(0.975 * n))]


def paired_ratio_ci(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of means a/b over paired seeds, with a 95% bootstrap interval resampling seeds."""
    k = len(a)
    if k == 0 or k != len(b) or sum(b) == 0:
        return (float("nan"), float("nan"), float("nan"))
    rng = random.Random(seed)
    vals = []
    for _ in range(n):
        idx = [rng.randrange(k) for _ in range(k)]
        sb = sum(b[i] for i in idx)
        vals.append(sum(a[i] for i in idx) / sb if sb else float("inf"))
    vals.sort()
    return sum(a) / sum(b), vals[int(0.025 * n)], vals[min(n - 1, int(0.975 * n))]


# ---- the goodput statistic ---------------------------------------------------------------------------
def wilson_lower(k: int, n: int, confidence: float = 0.95) -> float:
    """Lower end of the Wilson score interval for k successes in n trials (0 for n = 0)."""
    if n <= 0:
        return 0.0
    z = _z(confidence)
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def _z(confidence: float) -> float:
    """Two-sided normal quantile (0.95 -> 1.96), from the standard library's NormalDist."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def pooled_counts(points: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(met, requests) per class over several runs' summaries (the seeds at one rate)."""
    out: dict[str, tuple[int, int]] = {}
    for c in SLA_CLASSES:
        out[c] = (sum(p["classes"][c]["met"] for p in points), sum(p["classes"][c]["requests"] for p in points))
    return out


def pooled_pass(rule: Any, points: Sequence[dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    """The Wilson rule over the pooled runs: every class with a target has a lower bound at or above it
    (a class with no request at this rate constrains nothing)."""
    counts = pooled_counts(points)
    detail: dict[str, Any] = {}
    ok = True
    for c, target in rule.targets.items():
        k, n = counts[c]
        lb = wilson_lower(k, n, rule.confidence)
        detail[c] = {"met": k, "requests": n, "attainment": k / n if n else None, "lower_bound": lb, "target": target}
        if n and lb < target:
            ok = False
    return ok and any(counts[c][1] for c in rule.targets), detail


def class_shares(spec: Any) -> dict[str, float]:
    """Expected share of requests per SLA class for a workload (a chat session is several requests)."""
    turns = (spec.chat.turns_min + spec.chat.turns_max) / 2
    rag_w, chat_w = spec.mix.rag, spec.mix.chat * turns
    out = dict.fromkeys(SLA_CLASSES, 0.0)
    for w, mix in ((rag_w, spec.rag_sla or spec.sla), (chat_w, spec.chat_sla or spec.sla)):
        ws = mix.weights()
        tot = sum(ws)
        for c, x in zip(SLA_CLASSES, ws):
            out[c] += w * x / tot
    total = rag_w + chat_w
    return {c: v / total for c, v in out.items()}


def run_duration(sc: Scenario, rate: float) -> float:
    """How long each seed's run at `rate` must be for the Wilson rule: every class with a target gets
    `min_class_requests` measured requests pooled over the seeds (at least the sweep's duration, at most
    its `max_duration_s`)."""
    sw, rule = sc.sweep, sc.goodput
    if rule.statistic != "wilson":
        return sw.duration_s
    shares = class_shares(sc.workload)
    need = 0.0
    for c in rule.targets:
        if shares[c] > 0:
            need = max(need, rule.min_class_requests / (rate * len(sw.seeds) * shares[c]))
    return min(sw.max_duration_s, max(sw.duration_s, sw.warmup_s + 1.05 * need))


def _rankings(fl: Sequence[Any]) -> dict[str, Any]:
    """With the measured coarse-step model (compcost.py): how the compressed requests were ranked, and the
    share of those that wanted the embedding model but fell back to BM25 (its thread busy, or too late).
    Nothing without it (the figures stay as they were)."""
    used = [f.ranker for f in fl if getattr(f, "ranker", "")]
    if not used:
        return {}
    counts = {m: used.count(m) for m in sorted(set(used))}
    wanted = sum(v for m, v in counts.items() if m in ("hybrid", "bm25(busy)", "bm25(timeout)"))
    fell = counts.get("bm25(busy)", 0) + counts.get("bm25(timeout)", 0)
    return {"coarse_rankings": counts, "dense_fallback_share": fell / wanted if wanted else None}
