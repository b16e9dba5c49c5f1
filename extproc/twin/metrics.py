"""Run figures, SLO attainment, the pass rule, goodput search and bootstrap intervals. Pure."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from extproc.twin.scenario import Scenario
from extproc.workload.spec import SLA_CLASSES


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


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
        for f in xs:
            if f.first is None or f.done is None:
                continue
            a = f.first - f.sent
            ttft.append(a)
            n = f.req.output_tokens
            b = (f.done - f.first) / (n - 1) if n > 1 else 0.0
            tpot.append(b)
            if a * 1000 <= slo.ttft_ms and (slo.tpot_ms is None or b * 1000 <= slo.tpot_ms):
                met += 1
        met_all += met
        ttft_all += ttft
        per[cls] = {
            "requests": len(xs), "met": met, "attainment": met / len(xs) if xs else None,
            "unfinished": len(xs) - len(ttft),
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
        "site_share": {s: sum(1 for f in fl if f.site == s) / n if n else 0.0 for s in sites},
        "decision_us": 1e6 * res.decision_seconds / res.decisions if res.decisions else None,
    }


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
