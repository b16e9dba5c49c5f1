"""A traced run through a burst: Gamma (CV 2) arrivals, site pressure and keep-rate over time."""

from __future__ import annotations

from typing import Any

from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.metrics import summarize


def traced_burst(sc: Any, arm: str, rate: float, seed: int = 1) -> dict[str, Any]:
    wl = sc.workload.model_copy(update={"arrivals": sc.workload.arrivals.model_copy(update={"process": "gamma", "cv": 2.0})})
    bsc = sc.model_copy(update={"workload": wl})
    res = run_grid(bsc, ARMS[arm], rate, seed, trace=True)
    s = summarize(bsc, res, rate)
    return {
        "title": f"{arm} through bursts: Gamma arrivals (CV 2) at {rate:.1f} req/s",
        "arm": arm, "rate": rate, "attainment": s["attainment"], "rewrites": s["rewrites"],
        "timeline": res.timeline, "keep_rates": res.keep_rates,
    }
