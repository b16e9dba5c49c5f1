"""Through real Envoy, Redis, `aigrid serve` and recording stand-in sites: the report's per-site counts are
Envoy's admin stats, exactly, and agree with what the sites recorded and what the client saw."""

from __future__ import annotations

from collections import Counter

import pytest
from harness import wait_pressure

from extproc.tools.loadtest.runner import Endpoints, LoadTestError, attach_retention, fetch_standin_prompts, run_loadtest
from extproc.tools.loadtest.workloads import parse_spec

pytestmark = pytest.mark.slow


async def test_per_site_counts_match_envoy_admin_stats(stack_factory):
    st = stack_factory()
    gw = st.add_gateway()
    # Edge loaded: standard/batch traffic spills to remote in proportion, so both sites get requests.
    st.publish_load("edge", kv=0.9, waiting=20)
    st.publish_load("remote", kv=0.1)
    wait_pressure(gw, "edge", lambda p: p > 0.8)
    spec = parse_spec({
        "seed": 3, "concurrency": 4, "requests": 40, "mix": {"rag": 0.7, "chat": 0.3},
        "rag": {"prompt_tokens": {"median": 800, "min": 300, "max": 2000}},
    })
    ep = Endpoints(url=gw.url(""), admin=f"http://127.0.0.1:{gw.admin_port}",
                   gateway_metrics=[f"http://127.0.0.1:{gw.metrics_port}/metrics"])
    before = gw.stats()
    result = await run_loadtest(spec, ep, name="c", progress=False)
    after = gw.stats()

    assert result.summary["requests"] == 40 and result.summary["ok"] == 40, result.summary["errors"]
    # Stand-ins answer JSON even when asked to stream: measured end to end only, and said so.
    assert result.summary["streamed"] == 0 and any("not streamed" in n or "no response was streamed" in n for n in result.notes)
    envoy_counts = {s: after.get(f"cluster.site_{s}.upstream_rq_total", 0) - before.get(f"cluster.site_{s}.upstream_rq_total", 0)
                    for s in ("edge", "remote")}
    assert result.summary["per_site_requests"] == envoy_counts
    assert {s: len(st.records(s)) for s in ("edge", "remote")} == envoy_counts
    served = Counter(r["served_by"] for r in result.records)
    assert dict(served) == {s: n for s, n in envoy_counts.items() if n}
    assert envoy_counts["remote"] > 0, "the loaded edge spilled some traffic"
    assert result.envoy_extproc.get("streams_started", 0) >= 40
    assert any(k.startswith("aigrid_decisions_total") for k in result.gateway_counters)

    # Answer retention from the prompts as the stand-ins received them: no compressor here, so all kept.
    prompts = await fetch_standin_prompts({s: f"http://127.0.0.1:{p}" for s, p in st.sites.items()})
    attach_retention(result, prompts, "stand-in records")
    gold = sum(1 for r in result.records if r["gold"])
    assert result.retention["checked"] == gold and result.retention["fraction"] == 1.0


async def test_wrong_admin_address_is_a_clear_error():
    from extproc.tools.stack.procs import free_port

    port = free_port()
    spec = parse_spec({"concurrency": 1, "requests": 1})
    with pytest.raises(LoadTestError, match=rf"Envoy admin at http://127.0.0.1:{port}/stats.*unreachable"):
        await run_loadtest(spec, Endpoints(url="http://127.0.0.1:1", admin=f"http://127.0.0.1:{port}"), progress=False)
    with pytest.raises(LoadTestError, match="not a loopback address"):
        await run_loadtest(spec, Endpoints(url="http://192.0.2.1:10000"), progress=False)
