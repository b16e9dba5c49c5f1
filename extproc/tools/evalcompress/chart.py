"""The floor's trade as a chart: all-gold retention against the achieved keep-rate, one panel per
language, one line per flat margin through the max-overshoot settings, for each requested rate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def floor_chart(rows: Sequence[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    import matplotlib  # noqa: PLC0415 (only this command draws)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    langs = [x for x in sorted({r["lang"] for r in rows}) if x != "all"] or ["all"]
    rates = sorted({r["rate"] for r in rows})
    margins = sorted({r["margin"] for r in rows})
    fig, axes = plt.subplots(1, len(langs), figsize=(5.2 * len(langs), 4.2), squeeze=False, sharey=True)
    markers = "osD^v"
    for ax, lang in zip(axes[0], langs):
        for ri, rate in enumerate(rates):
            for mi, m in enumerate(margins):
                pts = sorted((r["max_overshoot"], r["achieved_rate"], r["gold_retention"]) for r in rows
                             if r["lang"] == lang and r["rate"] == rate and r["margin"] == m)
                if not pts:
                    continue
                ax.plot([p[1] for p in pts], [100 * p[2] for p in pts], marker=markers[mi % len(markers)],
                        color=f"C{ri}", alpha=0.45 + 0.55 * (mi + 1) / len(margins),
                        label=f"rate {rate:.2f}, margin {m:g}")
                for o, x, y in pts:
                    ax.annotate(f"{o:g}", (x, 100 * y), fontsize=6, xytext=(2, 2), textcoords="offset points")
            ax.axvline(rate, color=f"C{ri}", linestyle=":", linewidth=0.8)
            ax.axvspan(rate - 0.05, rate + 0.05, color=f"C{ri}", alpha=0.06)
        ax.set_title(f"{lang}: all gold kept vs achieved rate")
        ax.set_xlabel("achieved keep-rate (mean; point labels: max overshoot)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("all gold documents kept (%)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
