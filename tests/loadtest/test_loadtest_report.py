"""Report: JSON + PNG charts written and readable; tables and ratios from synthetic runs (no servers)."""

from __future__ import annotations

import json
import random

import pytest
from rich.console import Console

from extproc.tools.loadtest import stats as S
from extproc.tools.loadtest.report import compare, load_results, render_compare, render_summary, summary_rows, write_report
from extproc.tools.loadtest.runner import LoadResult, attach_retention


def _result(name: str, speed: float, seed: int = 1, gold: bool = True) -> LoadResult:
    rng = random.Random(seed)
    records = []
    for i in range(60):
        sla = ("realtime", "standard", "batch")[i % 3]
        ok = i % 20 != 7
        records.append({
            "id": f"lt-{i}", "index": i, "sla": sla, "kind": "rag", "lang": "ja" if i % 4 == 0 else "en",
            "ok": ok, "status": 200 if ok else 503, "streamed": True, "sent_s": i * 0.1,
            "ttft_s": rng.uniform(0.05, 0.4) / speed, "e2e_s": rng.uniform(1, 3) / speed, "itl_mean_s": 0.02 / speed,
            "prompt_tokens": 1000, "completion_tokens": 100, "est_prompt_tokens": 1100, "sent_prompt_tokens": 2000,
            "gold": f"KX-{i}" if gold else None,
        })
    samples = [{"t": t * 0.5, "site": site, "fb_used_mib": base + t * 10, "kv_usage": min(1.0, t / 20),
                "generation_tokens_total": 1000.0 * t * speed}
               for t in range(20) for site, base in (("edge", 40_000.0), ("remote", 130_000.0))]
    envoy_sites = {"edge": {"upstream_rq_total": 40}, "remote": {"upstream_rq_total": 20}}
    window = 10.0 / speed
    summary = S.summarize(records, window_s=window, envoy_sites=envoy_sites, site_samples=samples,
                          site_counter_diff={"edge": {"prompt_tokens_total": 40_000.0}, "remote": {"prompt_tokens_total": 17_000.0}})
    return LoadResult(name=name, spec={}, endpoints={}, started_unix=0.0, window_s=window, records=records, dropped=0,
                      site_clusters={"edge": "site_edge", "remote": "site_remote"}, envoy_sites=envoy_sites,
                      envoy_extproc={"streams_started": 60}, gateway_counters={}, site_counters={}, site_samples=samples,
                      gateway_samples=[], sampler_errors={}, summary=summary)


def test_summary_numbers():
    r = _result("a", 1.0)
    s = r.summary
    assert s["requests"] == 60 and s["ok"] == 57 and s["errors"] == {"503": 3}
    assert s["tokens_per_s"] == pytest.approx(57 * 1100 / 10.0)
    # Served tokens count prompts as sent (here twice what reached the GPU, as after compression).
    assert s["served_tokens_per_s"] == pytest.approx(57 * 2100 / 10.0)
    assert s["completion_tokens_per_s"] == pytest.approx(57 * 100 / 10.0)
    assert s["per_site_requests"] == {"edge": 40, "remote": 20}
    assert s["gpu"]["edge"]["fb_used_mib_max"] == 40_190.0
    assert s["site_generation_tokens_per_s"] == pytest.approx(2 * 1000 / 0.5)
    assert s["tokens_processed_site_counters"] == 57_000.0
    assert set(s["per_sla"]) == {"realtime", "standard", "batch"}


def test_compare_ratios():
    res = {"a": _result("a", 1.0), "b": _result("b", 1.25), "c": _result("c", 1.5)}
    cmp = compare(res, "a")
    assert cmp["GPU tokens/s (prompt at GPU + completion)"]["c"]["ratio"] == pytest.approx(1.5)
    assert cmp["GPU tokens/s (prompt at GPU + completion)"]["a"]["ratio"] == pytest.approx(1.0)
    assert cmp["p95 TTFT"]["c"]["ratio"] == pytest.approx(1 / 1.5)
    with pytest.raises(KeyError, match="baseline 'z'"):
        compare(res, "z")


def test_write_report_json_and_pngs(tmp_path):
    from matplotlib import image

    res = {"a": _result("a", 1.0), "b": _result("b", 1.2), "c": _result("c", 1.4)}
    arrived = {r["id"]: ("... KX-" + r["id"].split("-")[1] + " ..." if int(r["id"].split("-")[1]) % 5 else "dropped") for r in res["c"].records}
    attach_retention(res["c"], arrived, "test records")
    paths = write_report(res, tmp_path / "out", baseline="a")
    doc = json.loads(paths.json.read_text())
    assert doc["baseline"] == "a" and set(doc["results"]) == {"a", "b", "c"}
    assert doc["comparison"]["completion tokens/s"]["c"]["ratio"] == pytest.approx(1.4)
    assert set(paths.charts) == {"throughput", "gpu_memory", "latency", "tokens_processed", "answer_retention"}
    for p in paths.charts.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.imread(p).shape[0] > 100
    # Round trip: the JSON loads back into results that render the same table.
    back = load_results(paths.json)
    assert summary_rows(back) == summary_rows(res)
    assert back["c"].retention["fraction"] == pytest.approx(48 / 60) and back["c"].retention["source"] == "test records"


def test_retention_skipped_with_reason_and_tables_render(tmp_path):
    res = {"run": _result("run", 1.0, gold=False)}
    paths = write_report(res, tmp_path, baseline="a")  # baseline absent with one result: no comparison
    assert json.loads(paths.json.read_text())["comparison"] is None
    assert "no gold answers" in paths.skipped["answer_retention"]
    con = Console(record=True, width=200)
    render_summary(res, con)
    render_compare({"a": _result("a", 1.0), "c": _result("c", 2.0)}, "a", con)
    text = con.export_text()
    assert "p95 TTFT realtime" in text and "requests at edge (Envoy)" in text and "(2.00×)" in text


def test_retention_pure():
    recs = [{"id": "1", "gold": "東京 タワー", "lang": "ja"}, {"id": "2", "gold": "ZX 1", "lang": "en"},
            {"id": "3", "gold": "X", "lang": "en"}, {"id": "4", "gold": None}]
    out = S.answer_retention(recs, {"1": "…東京タワー…", "2": "code ZX\n 1 here", "3": "nothing"})
    assert out == {"fraction": pytest.approx(2 / 3), "kept": 2, "checked": 3, "not_seen": 0}


def test_percentile_and_envoy_helpers():
    assert S.percentile([], 50) is None
    assert S.percentile([3.0], 95) == 3.0
    assert S.percentile([1, 2, 3, 4], 50) == 2.5
    assert S.percentile(list(range(101)), 95) == pytest.approx(95)
    doc = {"stats": [{"name": "cluster.site_edge.upstream_rq_total", "value": 5},
                     {"name": "cluster.aigrid_via_edge.upstream_rq_total", "value": 5},
                     {"name": "http.aigrid.ext_proc.aigrid.streams_started", "value": 9},
                     {"histograms": {"supported_quantiles": []}}]}
    m = S.envoy_stats_map(doc)
    assert S.discover_site_clusters(m) == {"edge": "site_edge"}
    d = S.diff_counters({"cluster.site_edge.upstream_rq_total": 2}, m)
    assert S.per_site_envoy(d, {"edge": "site_edge"})["edge"]["upstream_rq_total"] == 3
    assert S.extproc_counters(d) == {"streams_started": 9}


def test_prometheus_parse_and_site_snapshot():
    text = """# HELP x
vllm:num_requests_running{model_name="m",engine="0"} 3
vllm:num_requests_running{model_name="m",engine="1"} 2
vllm:kv_cache_usage_perc{engine="0"} 0.5
vllm:kv_cache_usage_perc{engine="1"} 0.25
vllm:prompt_tokens_total{engine="0"} 100
DCGM_FI_DEV_FB_USED{gpu="0",modelName="NVIDIA H100 80GB HBM3",Hostname="a b"} 1000
DCGM_FI_DEV_FB_USED{gpu="1",modelName="x"} 500
garbage line
aigrid_decisions_total{site="edge",step="home",sla="standard"} 7
"""
    samples = S.parse_prometheus(text)
    snap = S.site_snapshot(samples)
    assert snap["running"] == 5 and snap["kv_usage"] == 0.375 and snap["fb_used_mib"] == 1500
    assert snap["waiting"] is None and snap["prompt_tokens_total"] == 100
    assert S.counter_series(samples, "aigrid_") == {'aigrid_decisions_total{site="edge",sla="standard",step="home"}': 7.0}
