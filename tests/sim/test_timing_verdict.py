"""The simulator's validity verdict: pure over lateness samples and slip, and served at /sim/timing."""

from __future__ import annotations

import aiohttp
import pytest

from extproc.tools.sim import SimSite
from extproc.tools.sim.config import SimSiteConfig
from extproc.tools.sim.stats import timing_summary


def test_verdict_valid_within_bounds() -> None:
    t = timing_summary([0.001] * 99 + [0.004], 0.0, lateness_p99_bound_s=0.005, max_slip_s=0.0)
    assert t["valid"] and t["reason"] == "" and t["steps"] == 100
    assert t["lateness_p99_s"] == pytest.approx(0.004) and t["lateness_max_s"] == pytest.approx(0.004)


def test_verdict_invalid_on_lateness_p99() -> None:
    samples = [0.001] * 90 + [0.050] * 10  # 10% of steps 50 ms late: p99 is 50 ms
    t = timing_summary(samples, 0.0, lateness_p99_bound_s=0.020, max_slip_s=0.0)
    assert not t["valid"] and "lateness p99 50.0 ms > bound 20.0 ms" in t["reason"]


def test_verdict_invalid_on_slip_and_both_reasons_named() -> None:
    t = timing_summary([0.5] * 10, 1.25, lateness_p99_bound_s=0.020, max_slip_s=0.5)
    assert not t["valid"]
    assert "lateness p99" in t["reason"] and "clock slip 1.250 s > bound 0.500 s" in t["reason"]


def test_verdict_of_an_idle_site_is_valid() -> None:
    t = timing_summary([], 0.0, lateness_p99_bound_s=0.02, max_slip_s=0.0)
    assert t["valid"] and t["steps"] == 0


def test_bad_bounds_are_refused_with_the_option_named() -> None:
    with pytest.raises(ValueError, match="lateness_p99_bound_ms"):
        SimSiteConfig(lateness_p99_bound_ms=0).validate()
    with pytest.raises(ValueError, match="max_slip_s"):
        SimSiteConfig(max_slip_s=-1).validate()


async def test_timing_endpoint_reports_the_verdict_against_the_configured_bound(make_site) -> None:
    strict: SimSite = await make_site(name="strict", lateness_p99_bound_ms=1e-6)
    loose: SimSite = await make_site(name="loose", lateness_p99_bound_ms=1e6, max_slip_s=1e6)
    out = {}
    async with aiohttp.ClientSession() as s:
        for site in (strict, loose):
            body = {"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 16, "ignore_eos": True}
            async with s.post(site.url + "/v1/completions", json=body) as r:
                assert r.status == 200
            async with s.get(site.url + "/sim/timing") as r:
                out[site.config.name] = await r.json()
    t = out["strict"]
    assert t["site"] == "strict" and t["steps"] >= 16
    assert t["lateness_p99_bound_s"] == pytest.approx(1e-9) and t["max_slip_s"] == 0.0
    # The verdict is the configured bound applied to the reported figures (a timer may fire early,
    # so whether 1 ns is met is not asserted; that the verdict follows the numbers is).
    assert t["valid"] == (t["lateness_p99_s"] <= 1e-9 and t["slip_seconds"] <= 0.0)
    assert t["valid"] or "lateness p99" in t["reason"] or "clock slip" in t["reason"]
    assert out["loose"]["valid"] is True and out["loose"]["reason"] == ""
