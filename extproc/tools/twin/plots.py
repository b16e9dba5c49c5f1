"""Charts of a twin experiment (matplotlib, Agg backend: files only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from extproc.tools.twin.arms import WATERFALL  # noqa: E402

# More arms than the default cycle has colours: twenty distinct ones.
plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.get_cmap("tab20").colors)


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write and close a figure (closed, so a long sweep does not keep every figure in memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ok(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc["arms"].items() if "goodput" in v}


def _rates(v: dict[str, Any]) -> list[float]:
    return sorted(float(r) for r in v["curves"])


def attainment_vs_rate(doc: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, v in _ok(doc).items():
        rs = _rates(v)
        ax.plot(rs, [100 * v["curves"][str(r) if str(r) in v["curves"] else str(int(r))]["attainment"] for r in rs], marker="o", label=k)
    rule = doc["scenario"]["goodput"]["overall"]
    ax.axhline(100 * rule, color="grey", ls="--", lw=1, label=f"{rule:.0%} rule")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("requests meeting their SLO (%)")
    ax.set_title("SLO attainment vs rate (mean over seeds)")
    ax.legend()
    return _save(fig, path)


def _curve(v: dict[str, Any], r: float) -> dict[str, Any]:
    c = v["curves"]
    return c.get(str(r)) or c[str(int(r))]


def goodput_bars(doc: dict[str, Any], path: Path) -> Path:
    ok = _ok(doc)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(ok)
    vals = [ok[k]["goodput"]["value"] for k in names]
    err = [[v - ok[k]["goodput"]["ci95"][0] for k, v in zip(names, vals)],
           [ok[k]["goodput"]["ci95"][1] - v for k, v in zip(names, vals)]]
    ax.bar(names, vals, yerr=err, capsize=5, color="tab:blue")
    for i, k in enumerate(names):
        if ok[k]["goodput"]["capped_at_top_rate"]:
            ax.annotate("≥ (top of sweep)", (i, vals[i]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("goodput (requests/s at SLO)")
    ax.set_title("Goodput per arm, 95% bootstrap interval over seeds")
    # Arm names such as R+C-noSLA run into each other on a horizontal axis.
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


def waterfall(doc: dict[str, Any], path: Path) -> Path | None:
    ok = _ok(doc)
    steps = [(k, label) for k, label in WATERFALL if k in ok]
    if len(steps) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    prev = 0.0
    for i, (k, label) in enumerate(steps):
        g = ok[k]["goodput"]["value"]
        if i == 0:
            ax.bar(i, g, color="grey")
        else:
            ax.bar(i, g - prev, bottom=prev, color="tab:green" if g >= prev else "tab:red")
        lo, hi = ok[k]["goodput"]["ci95"]
        # The arm's own 95% interval (bootstrap over requests) as a bar on its level.
        ax.errorbar(i, g, yerr=[[max(0.0, g - lo)], [max(0.0, hi - g)]], color="black", capsize=3, lw=1)
        ax.annotate(f"{g:.1f}\n[{lo:.0f}, {hi:.0f}]", (i, hi), ha="center", va="bottom", fontsize=7)
        prev = g
    ax.set_xticks(range(len(steps)), [label for _, label in steps], rotation=15)
    ax.set_ylabel("goodput (requests/s at SLO)")
    ax.set_title("Ablation: what each mechanism adds (95% intervals)")
    return _save(fig, path)


def latency_vs_rate(doc: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, v in _ok(doc).items():
        rs = _rates(v)
        axes[0].plot(rs, [_curve(v, r)["classes"]["standard"]["ttft_p99_ms"] for r in rs], marker="o", label=k)
        axes[1].plot(rs, [_curve(v, r)["classes"]["standard"]["tpot_p99_ms"] for r in rs], marker="o", label=k)
    slo = doc["scenario"]["slo"]["standard"]
    axes[0].axhline(slo["ttft_ms"], color="grey", ls="--", lw=1)
    if slo.get("tpot_ms"):
        axes[1].axhline(slo["tpot_ms"], color="grey", ls="--", lw=1)
    axes[0].set_yscale("log")
    axes[0].set_title("p99 TTFT, standard class (ms)")
    axes[1].set_title("p99 TPOT, standard class (ms)")
    for a in axes:
        a.set_xlabel("offered requests/s")
        a.legend()
    return _save(fig, path)


def burst(trace: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    by_site: dict[str, list[tuple[float, float]]] = {}
    for t, s, p in trace["timeline"]:
        if p is not None:
            by_site.setdefault(s, []).append((t, p))
    for s, pts in by_site.items():
        axes[0].plot([a for a, _ in pts], [b for _, b in pts], label=s, lw=1)
    axes[0].set_ylabel("site pressure")
    axes[0].legend()
    kr = trace["keep_rates"]
    axes[1].scatter([a for a, _ in kr], [b for _, b in kr], s=4)
    axes[1].set_ylabel("keep-rate per RAG request")
    axes[1].set_xlabel("time (s)")
    axes[0].set_title(trace["title"])
    return _save(fig, path)


def scale_chart(scale: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    g, wo, st = scale["gateways"], scale.get("gateways_without_exchange") or [], scale["sites"]
    ax = axes[0]
    for rows, ls, lab in ((g, "-", "with in-flight exchange"), (wo, "--", "without")):
        if rows:
            ax.plot([r["gateways"] for r in rows], [r["goodput"] for r in rows], marker="o", ls=ls, label=f"goodput, {lab}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("gateways sharing one map")
    ax.set_ylabel("goodput (req/s at SLO)")
    ax.set_title(f"{scale['gateway_sites']} sites, arm {scale['arm']}")
    ax.legend(fontsize=7)
    ax = axes[1]
    for rows, ls, lab in ((g, "-", "with exchange"), (wo, "--", "without")):
        if rows:
            ax.plot([r["gateways"] for r in rows], [r["worst_site_p95_pressure"] for r in rows], marker="s", ls=ls, label=lab)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("gateways sharing one map")
    ax.set_ylabel("worst site's pressure, p95 over time")
    ax.set_title(f"herding at {g[0]['herding_rate']:.0f} req/s" if g else "herding")
    ax.legend(fontsize=7)
    ax = axes[2]
    if st:
        ax.plot([r["sites"] for r in st], [r["goodput_per_replica"] for r in st], marker="o", label="goodput per replica")
        for r in st:
            if r["capped"]:
                ax.annotate("≥", (r["sites"], r["goodput_per_replica"]), ha="center", va="bottom")
        ax.set_xlabel("sites (edge / regional / far RTT)")
        ax.set_ylabel("goodput per replica (req/s)")
        a2 = ax.twinx()
        a2.plot([r["sites"] for r in st], [r["decision_us"] for r in st], marker="s", color="tab:red", label="µs CPU / decision")
        a2.set_ylabel("decision cost (µs CPU per route)", color="tab:red")
        ax.set_title("one gateway, more sites")
    return _save(fig, path)


def write_charts(doc: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    charts = {
        "attainment_vs_rate": attainment_vs_rate(doc, out / "attainment_vs_rate.png"),
        "goodput": goodput_bars(doc, out / "goodput.png"),
        "latency_vs_rate": latency_vs_rate(doc, out / "latency_vs_rate.png"),
    }
    w = waterfall(doc, out / "ablation_waterfall.png")
    if w is not None:
        charts["ablation_waterfall"] = w
    return {k: str(v) for k, v in charts.items()}
