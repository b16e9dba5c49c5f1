"""Report of one or more load-test runs: a JSON result file, rich tables (summary and ratios against a
baseline) and PNG charts (matplotlib, Agg backend: no display needed).

Every number comes from the run's records and the servers' own counters; a value that was not measured is
shown as "–" and written as null, never guessed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from extproc.tools.loadtest.runner import LoadResult
from extproc.tools.loadtest.stats import compare_summaries
from extproc.tools.loadtest.workloads import SLA_CLASSES

RESULT_FILE = "loadtest.json"
FORMAT_VERSION = 1


@dataclass
class ReportPaths:
    out_dir: Path
    json: Path
    charts: dict[str, Path] = field(default_factory=dict)
    # Charts not drawn and why (e.g. no gold answers, no GPU metrics).
    skipped: dict[str, str] = field(default_factory=dict)


# ---- formatting ----------------------------------------------------------------------------------------
def _f(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}{unit}"


def _ms(v: Any) -> str:
    return "–" if v is None else f"{v * 1000:,.0f} ms"


def _dig(d: Mapping[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _validity_cell(r: LoadResult) -> str:
    if r.sim_timing is None:
        return "–"
    return "yes" if r.valid else "NO: run invalid"


def report_validity(results: Mapping[str, LoadResult]) -> dict[str, Any]:
    """The report's verdict: invalid if any run's simulated sites fell behind real time. Such a run
    measured the host's CPU, not the modelled GPUs, and must not be quoted."""
    reasons = [f"{name}: {why}" for name, r in results.items() for why in (r.sim_timing or {}).get("reasons", [])]
    checked = any(r.sim_timing is not None for r in results.values())
    return {"valid": not reasons, "checked": checked, "reasons": reasons}


def summary_rows(results: Mapping[str, LoadResult]) -> list[tuple[str, list[str]]]:
    """(label, one cell per result): the table as plain strings, for rich and for tests/README."""
    rs = list(results.values())
    rows: list[tuple[str, list[str]]] = []
    if any(r.sim_timing is not None for r in rs):
        rows.append(("simulator kept real time", [_validity_cell(r) for r in rs]))
    rows += [
        ("requests ok / sent", [f"{r.summary['ok']} / {r.summary['requests']}" for r in rs]),
        ("errors", [", ".join(f"{k}: {v}" for k, v in r.summary["errors"].items()) or "0" for r in rs]),
        ("dropped (client in-flight cap)", [str(r.summary["dropped"]) for r in rs]),
        ("window", [_f(r.window_s, " s") for r in rs]),
        ("served tokens/s (prompt as sent + completion)", [_f(r.summary.get("served_tokens_per_s")) for r in rs]),
        ("GPU tokens/s (prompt at GPU + completion)", [_f(r.summary["tokens_per_s"]) for r in rs]),
        ("completion tokens/s", [_f(r.summary["completion_tokens_per_s"]) for r in rs]),
        ("site generation tokens/s (while sending)", [_f(r.summary.get("site_generation_tokens_per_s")) for r in rs]),
        ("p50 TTFT", [_ms(_dig(r.summary, "ttft_s", "p50")) for r in rs]),
        ("p95 TTFT", [_ms(_dig(r.summary, "ttft_s", "p95")) for r in rs]),
    ]
    for sla in SLA_CLASSES:
        if any(sla in r.summary["per_sla"] for r in rs):
            rows.append((f"p95 TTFT {sla}", [_ms(_dig(r.summary, "per_sla", sla, "ttft_s", "p95")) for r in rs]))
    rows += [
        ("p95 end-to-end", [_ms(_dig(r.summary, "e2e_s", "p95")) for r in rs]),
        ("p50 inter-token", [_ms(_dig(r.summary, "itl_s", "p50")) for r in rs]),
        ("tokens processed (prompt tokens at GPUs)", [_f(r.summary["tokens_processed"], digits=0) for r in rs]),
        ("prompt tokens sent (cl100k, ok requests)", [_f(r.summary.get("sent_prompt_tokens"), digits=0) for r in rs]),
    ]
    sites = sorted({s for r in rs for s in r.envoy_sites} | {s for r in rs for s in r.summary["gpu"]})
    for s in sites:
        rows.append((f"requests at {s} (Envoy)", [str(_dig(r.envoy_sites, s, "upstream_rq_total") or 0) if s in r.envoy_sites else "–" for r in rs]))
    for s in sites:
        rows.append((f"GPU memory {s} mean / max", [
            f"{_f(_gib(_dig(r.summary, 'gpu', s, 'fb_used_mib_mean')), ' GiB')} / {_f(_gib(_dig(r.summary, 'gpu', s, 'fb_used_mib_max')), ' GiB')}"
            if s in r.summary["gpu"] else "–" for r in rs]))
        rows.append((f"KV cache {s} mean / max", [
            f"{_f(_pct(_dig(r.summary, 'gpu', s, 'kv_usage_mean')), '%')} / {_f(_pct(_dig(r.summary, 'gpu', s, 'kv_usage_max')), '%')}"
            if s in r.summary["gpu"] else "–" for r in rs]))
    rows.append(("retries (Envoy)", [str(sum(v.get("upstream_rq_retry", 0) for v in r.envoy_sites.values())) for r in rs]))
    rows.append(("ext_proc streams / failed", [
        f"{r.envoy_extproc.get('streams_started', 0)} / {r.envoy_extproc.get('streams_failed', 0)}" for r in rs]))
    if any(r.retention for r in rs):
        rows.append(("answer retention", [
            f"{_f(100 * r.retention['fraction'], '%')} of {r.retention['checked']}" if r.retention and r.retention.get("fraction") is not None
            else "–" for r in rs]))
    return rows


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / 1024


def render_summary(results: Mapping[str, LoadResult], console: Console | None = None) -> Table:
    t = Table(title="aigrid loadtest", show_lines=False)
    t.add_column("metric")
    for name in results:
        t.add_column(name, justify="right")
    for label, cells in summary_rows(results):
        t.add_row(label, *cells)
    if console is not None:
        console.print(t)
        for name, r in results.items():
            for n in r.notes:
                console.print(f"[dim]{name}: {n}[/dim]")
        verdict = report_validity(results)
        if not verdict["valid"]:
            console.print("[bold red]REPORT INVALID, do not quote it:[/bold red] " + "; ".join(verdict["reasons"]))
    return t


def compare(results: Mapping[str, LoadResult], baseline: str = "a") -> dict[str, dict[str, dict[str, float | None]]]:
    """{metric: {scenario: {"value", "ratio"}}}, ratio = value / the baseline scenario's value."""
    return compare_summaries({k: v.summary for k, v in results.items()}, baseline)


def render_compare(results: Mapping[str, LoadResult], baseline: str = "a", console: Console | None = None) -> Table:
    cmp = compare(results, baseline)
    t = Table(title=f"ratios vs {baseline}")
    t.add_column("metric")
    for name in results:
        t.add_column(name, justify="right")
    for label, per in cmp.items():
        cells = []
        for name in results:
            v, r = per[name]["value"], per[name]["ratio"]
            val = _ms(v) if "TTFT" in label or "e2e" in label else _f(v)
            cells.append(f"{val} ({_f(r, '×', 2)})" if r is not None else val)
        t.add_row(label, *cells)
    if console is not None:
        console.print(t)
    return t


# ---- JSON ----------------------------------------------------------------------------------------------
def _clean(o: Any) -> Any:
    # JSON has no NaN: an unmeasurable value (an empty window) is written as null.
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def load_results(path: str | Path) -> dict[str, LoadResult]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: LoadResult.from_dict(v) for k, v in doc["results"].items()}


# ---- charts --------------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _bars(ax: Any, names: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, vals) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        ys = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals]
        bars = ax.bar(xs, ys, width, label=label)
        for b, v in zip(bars, vals):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                ax.annotate("n/a", (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)


def write_charts(results: Mapping[str, LoadResult], out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    plt = _plt()
    names = list(results)
    rs = list(results.values())
    charts: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def save(fig: Any, key: str) -> None:
        path = out_dir / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        charts[key] = path

    fig, ax = plt.subplots(figsize=(6, 4))
    _bars(ax, names, {"served (prompt as sent + completion)": [r.summary.get("served_tokens_per_s") for r in rs],
                      "at GPUs (prompt at GPU + completion)": [r.summary["tokens_per_s"] for r in rs],
                      "completion only": [r.summary["completion_tokens_per_s"] for r in rs]}, "tokens / s")
    ax.set_title("Token throughput")
    save(fig, "throughput")

    if any(r.site_samples for r in rs):
        sites = sorted({s["site"] for r in rs for s in r.site_samples})
        # Framebuffer memory next to KV-cache usage: vLLM preallocates its KV pool at start, so the
        # framebuffer line is flat by design; how full that pool is shows in the KV column.
        fig, axes = plt.subplots(len(sites), 2, figsize=(11, 2.8 * len(sites)), squeeze=False)
        for row, site in enumerate(sites):
            for col, (key, scale, title, unit) in enumerate((
                ("fb_used_mib", 1 / 1024, f"GPU memory used at {site} (DCGM framebuffer)", "GiB"),
                ("kv_usage", 100.0, f"KV-cache usage at {site} (vLLM)", "%"),
            )):
                ax = axes[row, col]
                for name, r in results.items():
                    pts = [(s["t"], s[key] * scale) for s in r.site_samples if s["site"] == site and s.get(key) is not None]
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("s since start")
                ax.set_ylabel(unit)
                ax.legend(fontsize=7)
        save(fig, "gpu_memory")
    else:
        skipped["gpu_memory"] = "no site /metrics were sampled (pass --site-metrics name=URL)"

    # TTFT and end-to-end side by side: on one axis the seconds-long e2e bars flatten the TTFT ones.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    series: dict[str, list[float | None]] = {
        "p50": [_dig(r.summary, "ttft_s", "p50") for r in rs],
        "p95": [_dig(r.summary, "ttft_s", "p95") for r in rs],
    }
    for sla in SLA_CLASSES:
        if any(sla in r.summary["per_sla"] for r in rs):
            series[f"p95 {sla}"] = [_dig(r.summary, "per_sla", sla, "ttft_s", "p95") for r in rs]
    _bars(ax1, names, series, "seconds")
    ax1.set_title("Time to first token")
    _bars(ax2, names, {"p50": [_dig(r.summary, "e2e_s", "p50") for r in rs],
                       "p95": [_dig(r.summary, "e2e_s", "p95") for r in rs]}, "seconds")
    ax2.set_title("End-to-end")
    save(fig, "latency")

    fig, ax = plt.subplots(figsize=(6, 4))
    _bars(ax, names, {"prompt tokens at GPUs": [r.summary["tokens_processed"] for r in rs],
                      "completion tokens": [r.summary["completion_tokens"] for r in rs]}, "tokens")
    ax.set_title("Tokens processed")
    save(fig, "tokens_processed")

    if any(r.retention and r.retention.get("fraction") is not None for r in rs):
        fig, ax = plt.subplots(figsize=(6, 4))
        _bars(ax, names, {"answer retention": [
            (100 * r.retention["fraction"]) if r.retention and r.retention.get("fraction") is not None else None for r in rs]}, "% of gold answers still in the prompt")
        ax.set_ylim(0, 105)
        ax.set_title("Answer retention (gold answer string reached the site)")
        save(fig, "answer_retention")
    elif not any(r.records and any(x.get("gold") for x in r.records) for r in rs):
        skipped["answer_retention"] = "the workload carries no gold answers"
    else:
        skipped["answer_retention"] = ("not measured: the client cannot see the prompt as it arrived at the site; "
                                       "attach one with runner.attach_retention (a recording upstream) or the "
                                       "compressor's own evaluation (aigrid eval-compression)")
    return charts, skipped


def write_report(results: Mapping[str, LoadResult], out_dir: str | Path, baseline: str | None = "a") -> ReportPaths:
    """Write loadtest.json and the PNG charts into out_dir (created). `baseline` names the result the
    ratios are taken against; None (or a name not present with a single result) skips the comparison."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    use_base = baseline if baseline in results and len(results) > 1 else None
    doc = {
        "format": FORMAT_VERSION,
        "validity": report_validity(results),
        "baseline": use_base,
        "results": {k: v.to_dict() for k, v in results.items()},
        "comparison": compare(results, use_base) if use_base else None,
    }
    path = out / RESULT_FILE
    path.write_text(json.dumps(_clean(doc), ensure_ascii=False, indent=1), encoding="utf-8")
    charts, skipped = write_charts(results, out)
    return ReportPaths(out, path, charts, skipped)
