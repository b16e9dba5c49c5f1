"""A run whose simulator fell behind real time is marked invalid: the pure verdict, the report, and the
sites' /sim/timing read over real HTTP (simulated sites on loopback)."""

from __future__ import annotations

import json

import aiohttp
from rich.console import Console

from extproc.tools.loadtest import stats as S
from extproc.tools.loadtest.report import render_summary, report_validity, summary_rows, write_report
from extproc.tools.loadtest.runner import LoadResult, attach_sim_validity, fetch_sim_timing, sim_base_url
from extproc.tools.sim import SimSiteConfig, start_sim_site
from extproc.tools.stack.procs import free_port as _free_port

OK = {"steps": 500, "lateness_p99_s": 0.004, "lateness_p99_bound_s": 0.020, "slip_seconds": 0.0, "max_slip_s": 0.0, "valid": True}
LATE = {**OK, "lateness_p99_s": 0.0731, "valid": False}
SLIPPED = {**OK, "slip_seconds": 2.5, "valid": False}


def _result(name: str = "r") -> LoadResult:
    summary = S.summarize([], window_s=1.0, envoy_sites={}, site_samples=[], site_counter_diff={})
    return LoadResult(name=name, spec={}, endpoints={}, started_unix=0.0, window_s=1.0, records=[], dropped=0,
                      site_clusters={}, envoy_sites={}, envoy_extproc={}, gateway_counters={}, site_counters={},
                      site_samples=[], gateway_samples=[], sampler_errors={}, summary=summary)


def test_verdict_names_site_figure_and_bound() -> None:
    v = S.sim_validity({"edge": OK, "remote": LATE})
    assert not v["valid"]
    assert v["reasons"] == ["simulator fell behind real time: site remote lateness p99 73.1 ms > bound 20.0 ms"]
    assert v["sites"]["edge"]["valid"] and not v["sites"]["remote"]["valid"]


def test_slip_alone_invalidates() -> None:
    v = S.sim_validity({"core": SLIPPED})
    assert v["reasons"] == ["simulator fell behind real time: site core clock slip 2.500 s > bound 0.000 s"]


def test_sites_without_a_verdict_do_not_invalidate() -> None:
    v = S.sim_validity({"real-vllm": {"error": "GET http://x/sim/timing: HTTP 404 (not a simulator?)"}, "edge": OK})
    assert v["valid"] and "real-vllm" in v["unchecked"] and v["reasons"] == []


def test_a_bare_false_flag_is_still_invalid() -> None:
    v = S.sim_validity({"old": {"valid": False, "reason": "lateness p99 30 ms > bound 20 ms"}})
    assert not v["valid"] and "site old (lateness p99 30 ms > bound 20 ms)" in v["reasons"][0]


def test_report_marks_an_invalid_run_and_says_why(tmp_path) -> None:
    good, bad = _result("good"), _result("bad")
    attach_sim_validity(good, {"edge": OK})
    attach_sim_validity(bad, {"edge": OK, "remote": LATE})
    assert good.valid and not bad.valid
    assert any(n.startswith("INVALID: simulator fell behind real time: site remote") for n in bad.notes)
    rows = dict(summary_rows({"good": good, "bad": bad}))
    assert rows["simulator kept real time"] == ["yes", "NO: run invalid"]
    verdict = report_validity({"good": good, "bad": bad})
    assert verdict == {"valid": False, "checked": True,
                       "reasons": ["bad: simulator fell behind real time: site remote lateness p99 73.1 ms > bound 20.0 ms"]}
    paths = write_report({"good": good, "bad": bad}, tmp_path, baseline="good")
    doc = json.loads(paths.json.read_text())
    assert doc["validity"]["valid"] is False and doc["results"]["bad"]["sim_timing"]["valid"] is False
    console = Console(record=True, width=200)
    render_summary({"good": good, "bad": bad}, console)
    assert "REPORT INVALID" in console.export_text()
    # A report whose sites were never checked says so instead of claiming validity it did not test.
    assert report_validity({"x": _result()}) == {"valid": True, "checked": False, "reasons": []}


def test_base_url_from_metrics_url() -> None:
    assert sim_base_url("http://127.0.0.1:8001/metrics") == "http://127.0.0.1:8001"
    assert sim_base_url("http://127.0.0.1:8001/metrics/dcgm/") == "http://127.0.0.1:8001"


async def test_fetch_reads_each_sites_verdict_over_http() -> None:
    site = await start_sim_site(SimSiteConfig(name="edge", port=_free_port(), speed_factor=20.0))
    nowhere = f"http://127.0.0.1:{_free_port()}/metrics"
    try:
        async with aiohttp.ClientSession() as s:
            body = {"model": "llama-3.1-8b", "prompt": "hello grid", "max_tokens": 8, "ignore_eos": True}
            async with s.post(site.url + "/v1/completions", json=body) as r:
                assert r.status == 200
            timings = await fetch_sim_timing(s, {"edge": site.url + "/metrics", "gone": nowhere})
            assert timings["edge"]["steps"] >= 8 and "lateness_p99_bound_s" in timings["edge"]
            assert "error" in timings["gone"]
            verdict = S.sim_validity(timings)
            assert verdict["sites"]["edge"]["valid"] == timings["edge"]["valid"]
            assert "gone" in verdict["unchecked"]
            # reset=1 starts a new window: the next read has no steps.
            await fetch_sim_timing(s, {"edge": site.url + "/metrics"}, reset=True)
            again = await fetch_sim_timing(s, {"edge": site.url + "/metrics"})
            assert again["edge"]["steps"] == 0
    finally:
        await site.stop()
