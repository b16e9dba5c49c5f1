"""Pure math for the load test: percentiles, Envoy admin stats diffs, Prometheus text parsing, per-run
summaries and ratios between runs. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extproc.tools.loadtest.workloads import SLA_CLASSES
from extproc.tools.percentile import percentile
from extproc.wire.promtext import Sample, read_samples

# Envoy admin stat names (see envoy/envoy.yaml as rendered by `aigrid envoy-config`).
SITE_CLUSTER_RE = re.compile(r"^cluster\.(site_[A-Za-z0-9_-]+)\.upstream_rq_total$")
EXTPROC_PREFIX = "http.aigrid.ext_proc.aigrid."
CLUSTER_FIELDS = ("upstream_rq_total", "upstream_rq_2xx", "upstream_rq_4xx", "upstream_rq_5xx", "upstream_rq_retry",
                  "upstream_rq_retry_success", "upstream_rq_timeout", "upstream_cx_connect_fail")


def mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


# ---- Envoy admin ---------------------------------------------------------------------------------------
def envoy_stats_map(doc: Mapping[str, Any]) -> dict[str, int]:
    """`/stats?format=json` → {name: value} for counters and gauges (histograms are skipped)."""
    out: dict[str, int] = {}
    for s in doc.get("stats", ()):
        if isinstance(s, dict) and "value" in s and "name" in s:
            try:
                out[str(s["name"])] = int(s["value"])
            except (TypeError, ValueError):
                continue
    return out


def diff_counters(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after − before per name (a name absent before counts from 0: Envoy creates stats lazily)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def discover_site_clusters(names: Iterable[str]) -> dict[str, str]:
    """{site: cluster} for the per-site clusters the renderer makes (`site_<name>`); the aggregate
    `aigrid_via_<site>` clusters are routing indirections and carry no per-site counts of their own."""
    out: dict[str, str] = {}
    for n in names:
        m = SITE_CLUSTER_RE.match(n)
        if m:
            cluster = m.group(1)
            out[cluster.removeprefix("site_")] = cluster
    return dict(sorted(out.items()))


def per_site_envoy(diff: Mapping[str, float], clusters: Mapping[str, str]) -> dict[str, dict[str, int]]:
    return {
        site: {f: int(diff.get(f"cluster.{cluster}.{f}", 0)) for f in CLUSTER_FIELDS}
        for site, cluster in clusters.items()
    }


def extproc_counters(diff: Mapping[str, float]) -> dict[str, int]:
    return {k.removeprefix(EXTPROC_PREFIX): int(v) for k, v in sorted(diff.items()) if k.startswith(EXTPROC_PREFIX)}


# ---- Prometheus text -----------------------------------------------------------------------------------
def parse_prometheus(text: str) -> list[Sample]:
    """Prometheus text exposition → [(name, labels, value)]. Unparseable lines are skipped, not fatal:
    a sampler must keep going when one exporter prints something odd."""
    return read_samples(text, strict=False)


def metric_values(samples: Iterable[Sample], name: str) -> list[float]:
    return [v for n, _, v in samples if n == name and not math.isnan(v)]


def series_key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def counter_series(samples: Iterable[Sample], prefix: str) -> dict[str, float]:
    """Every `<prefix>…_total` series (Prometheus counters) by its full key, for before/after diffs."""
    return {series_key(n, lbl): v for n, lbl, v in samples if n.startswith(prefix) and n.endswith("_total")}


def site_snapshot(samples: Sequence[Sample]) -> dict[str, float | None]:
    """One sample of a site's /metrics: GPU memory (DCGM framebuffer, MiB, summed over the site's GPUs),
    GPU utilisation (mean %), KV-cache usage (mean over engines), running and waiting requests (sums), and
    the vLLM token counters (sums, for diffs)."""

    def total(name: str) -> float | None:
        v = metric_values(samples, name)
        return float(sum(v)) if v else None

    def avg(name: str) -> float | None:
        return mean(metric_values(samples, name))

    kv = avg("vllm:kv_cache_usage_perc")
    if kv is None:
        kv = avg("vllm:gpu_cache_usage_perc")  # older vLLM name
    return {
        "fb_used_mib": total("DCGM_FI_DEV_FB_USED"),
        "fb_free_mib": total("DCGM_FI_DEV_FB_FREE"),
        "gpu_util_pct": avg("DCGM_FI_DEV_GPU_UTIL"),
        "kv_usage": kv,
        "running": total("vllm:num_requests_running"),
        "waiting": total("vllm:num_requests_waiting"),
        "prompt_tokens_total": total("vllm:prompt_tokens_total"),
        "generation_tokens_total": total("vllm:generation_tokens_total"),
    }


# ---- summaries -----------------------------------------------------------------------------------------
def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99), "n": len(values)}


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    window_s: float,
    envoy_sites: Mapping[str, Mapping[str, int]],
    site_samples: Sequence[Mapping[str, Any]],
    site_counter_diff: Mapping[str, Mapping[str, float | None]],
    dropped: int = 0,
) -> dict[str, Any]:
    """The numbers the table, the charts and the comparison are made of, from one run's raw records."""
    ok = [r for r in records if r.get("ok")]
    errors: dict[str, int] = {}
    for r in records:
        if not r.get("ok"):
            key = str(r.get("status") or r.get("error_kind") or "error")
            errors[key] = errors.get(key, 0) + 1
    prompt = sum(int(r.get("prompt_tokens") or 0) for r in ok)
    sent_prompt = sum(int(r.get("sent_prompt_tokens") or 0) for r in ok)
    completion = sum(int(r.get("completion_tokens") or 0) for r in ok)
    w = window_s if window_s > 0 else float("nan")

    def lat(rs: Sequence[Mapping[str, Any]], key: str) -> dict[str, float | None]:
        return _pcts([float(r[key]) for r in rs if r.get(key) is not None])

    per_sla = {
        sla: {"requests": len(rs), "ttft_s": lat(rs, "ttft_s"), "e2e_s": lat(rs, "e2e_s")}
        for sla in SLA_CLASSES
        if (rs := [r for r in ok if r.get("sla") == sla]) or any(x.get("sla") == sla for x in records)
    }
    gpu: dict[str, dict[str, float | None]] = {}
    for site in sorted({str(s["site"]) for s in site_samples}):
        ss = [s for s in site_samples if s["site"] == site]
        fb = [float(s["fb_used_mib"]) for s in ss if s.get("fb_used_mib") is not None]
        kv = [float(s["kv_usage"]) for s in ss if s.get("kv_usage") is not None]
        gpu[site] = {"fb_used_mib_mean": mean(fb), "fb_used_mib_max": max(fb) if fb else None,
                     "kv_usage_mean": mean(kv), "kv_usage_max": max(kv) if kv else None, "samples": len(ss)}
    # The sites' own generation rate while requests were still being sent (samples up to the last send):
    # unlike tokens/window it leaves out the drain at the end, where fewer and fewer requests are in
    # flight and the slowest last request decides the window (that tail dominates a short run).
    last_send = max((float(r["sent_s"]) for r in records if r.get("sent_s") is not None), default=None)
    site_gen_rate = 0.0
    have_rate = False
    for site in gpu:
        pts = [(float(s["t"]), float(s["generation_tokens_total"])) for s in site_samples
               if s["site"] == site and s.get("generation_tokens_total") is not None
               and (last_send is None or float(s["t"]) <= last_send)]
        if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
            site_gen_rate += (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
            have_rate = True
    # Tokens processed = prompt tokens that reached the GPUs. The sites' own counters say it best; the
    # `usage` the sites returned says the same for completed requests; both are reported.
    site_prompt = [d.get("prompt_tokens_total") for d in site_counter_diff.values()]
    tokens_processed_sites = sum(v for v in site_prompt if v is not None) if any(v is not None for v in site_prompt) else None
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "dropped": dropped,
        "window_s": window_s,
        "requests_per_s": len(ok) / w,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "est_prompt_tokens_sent": sum(int(r.get("est_prompt_tokens") or 0) for r in records),
        # Served tokens: prompts as the clients sent them + completions, per second. The headline: it
        # counts what users got, so a compressed prompt is worth as much as the original.
        "served_tokens_per_s": (sent_prompt + completion) / w,
        "sent_prompt_tokens": sent_prompt,
        "tokens_per_s": (prompt + completion) / w,
        "completion_tokens_per_s": completion / w,
        "ttft_s": lat(ok, "ttft_s"),
        "e2e_s": lat(ok, "e2e_s"),
        "itl_s": _pcts([float(r["itl_mean_s"]) for r in ok if r.get("itl_mean_s") is not None]),
        "site_generation_tokens_per_s": site_gen_rate if have_rate else None,
        "per_sla": per_sla,
        "per_site_requests": {s: v.get("upstream_rq_total", 0) for s, v in envoy_sites.items()},
        "gpu": gpu,
        "tokens_processed": prompt,
        "tokens_processed_site_counters": tokens_processed_sites,
        "streamed": sum(1 for r in ok if r.get("streamed")),
    }


def answer_retention(records: Sequence[Mapping[str, Any]], arrived: Mapping[str, str]) -> dict[str, Any]:
    """Share of gold-carrying requests whose prompt, as it arrived at the site, still contains the gold
    answer (whitespace-normalised; no whitespace at all for Japanese, as the compressor's eval does)."""
    kept = total = 0
    missing = 0
    for r in records:
        gold = r.get("gold")
        if not gold:
            continue
        text = arrived.get(str(r.get("id")))
        if text is None:
            missing += 1
            continue
        total += 1
        ja = r.get("lang") == "ja"
        norm = (lambda s: re.sub(r"\s+", "", s)) if ja else (lambda s: re.sub(r"\s+", " ", s))
        if norm(str(gold)) in norm(text):
            kept += 1
    return {"fraction": kept / total if total else None, "kept": kept, "checked": total, "not_seen": missing}


# ---- comparison ----------------------------------------------------------------------------------------
# (label, path into the summary, higher is better)
COMPARE_METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("served tokens/s (prompt as sent + completion)", ("served_tokens_per_s",), True),
    ("GPU tokens/s (prompt at GPU + completion)", ("tokens_per_s",), True),
    ("completion tokens/s", ("completion_tokens_per_s",), True),
    ("requests/s", ("requests_per_s",), True),
    ("site generation tokens/s", ("site_generation_tokens_per_s",), True),
    ("p50 TTFT", ("ttft_s", "p50"), False),
    ("p95 TTFT", ("ttft_s", "p95"), False),
    ("p95 TTFT realtime", ("per_sla", "realtime", "ttft_s", "p95"), False),
    ("p95 e2e", ("e2e_s", "p95"), False),
    ("tokens processed", ("tokens_processed",), False),
)


def dig(d: Mapping[str, Any], path: Sequence[str]) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return cur


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def compare_summaries(summaries: Mapping[str, Mapping[str, Any]], baseline: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """{metric label: {scenario: {"value", "ratio"}}} with ratio = value / baseline's value."""
    if baseline not in summaries:
        raise KeyError(f"baseline {baseline!r} is not one of the results ({', '.join(summaries)})")
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for label, path, _ in COMPARE_METRICS:
        base = dig(summaries[baseline], path)
        out[label] = {name: {"value": dig(s, path), "ratio": ratio(dig(s, path), base)} for name, s in summaries.items()}
    return out


def sim_validity(timings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Whether a run may be quoted, from each simulated site's ``/sim/timing`` after it. PURE.

    A site whose simulator fell behind real time (step lateness p99 or clock slip past the bound it
    states) measured the host's CPU, not the modelled GPU: the run is invalid and each reason names the
    site, the figure and the bound. A site with no verdict (a real engine, or unreachable: ``error``)
    does not invalidate the run; it is listed under ``unchecked``.
    """
    reasons: list[str] = []
    sites: dict[str, Any] = {}
    unchecked: dict[str, str] = {}
    for name in sorted(timings):
        t = timings[name]
        if "error" in t:
            unchecked[name] = str(t["error"])
            continue
        p99, bound = t.get("lateness_p99_s"), t.get("lateness_p99_bound_s")
        slip, max_slip = t.get("slip_seconds"), t.get("max_slip_s")
        site_reasons = []
        if isinstance(p99, (int, float)) and isinstance(bound, (int, float)) and p99 > bound:
            site_reasons.append(
                f"simulator fell behind real time: site {name} lateness p99 {p99 * 1e3:.1f} ms > bound {bound * 1e3:.1f} ms"
            )
        if isinstance(slip, (int, float)) and isinstance(max_slip, (int, float)) and slip > max_slip:
            site_reasons.append(
                f"simulator fell behind real time: site {name} clock slip {slip:.3f} s > bound {max_slip:.3f} s"
            )
        if not site_reasons and t.get("valid") is False:  # a verdict without the figures behind it
            site_reasons.append(f"simulator fell behind real time: site {name} ({t.get('reason') or 'no reason given'})")
        reasons += site_reasons
        sites[name] = {
            "valid": not site_reasons, "lateness_p99_s": p99, "lateness_p99_bound_s": bound,
            "slip_seconds": slip, "max_slip_s": max_slip, "steps": t.get("steps"),
        }
    return {"valid": not reasons, "reasons": reasons, "sites": sites, "unchecked": unchecked}
