"""Load reports → node table → site load, and the codec's rejections. Pure."""

from __future__ import annotations

import math

import pytest

from extproc.gateway.loadmap.aggregate import aggregate, aggregate_site
from extproc.gateway.loadmap.model import GpuLoad, NodeLoad
from extproc.gateway.loadmap.nodes import age_from_ttl, apply_report, drop_expired, is_newer, node_from_report
from extproc.wire.loadreport import EngineStats, GpuStats, NodeLoadReport, ReportRejected, decode_report, encode_report


def report(**kw) -> NodeLoadReport:
    base = dict(schema_version=1, site="edge", node="n1", agent_id="a", sequence=1, healthy=True, ttl_ms=2000, interval_ms=250)
    base.update(kw)
    return NodeLoadReport(**base)


def test_roundtrip_and_validation():
    r = report(gpus=[GpuStats(index=0, utilization=0.5, memory_used_bytes=1, memory_total_bytes=2)],
               engine=EngineStats(endpoints=1, requests_running=3, requests_waiting=4, kv_cache_usage=0.7))
    assert decode_report(encode_report(r)) == r


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (b"\xff\xff\xff garbage", "not a NodeLoadReport"),
        (b"x" * 70_000, "larger than"),
        (report(schema_version=2).SerializeToString(), "schema_version"),
        (report(site="Bad Site!").SerializeToString(), "site"),
        (report(node="").SerializeToString(), "node"),
        (report(sequence=0).SerializeToString(), "sequence"),
        (report(gpus=[GpuStats(utilization=math.nan)]).SerializeToString(), "utilization"),
        (report(gpus=[GpuStats(utilization=-0.1)]).SerializeToString(), "utilization"),
        (report(gpus=[GpuStats(utilization=7.0)]).SerializeToString(), "utilization"),
        (report(gpus=[GpuStats(memory_used_bytes=5, memory_total_bytes=2)]).SerializeToString(), "memory"),
        (report(gpus=[GpuStats(power_watts=math.inf)]).SerializeToString(), "power"),
        (report(engine=EngineStats(endpoints=1, kv_cache_usage=math.nan)).SerializeToString(), "kv_cache_usage"),
        (report(engine=EngineStats(endpoints=1, requests_waiting=10**9)).SerializeToString(), "request counts"),
    ],
)
def test_bad_reports_are_rejected_with_a_reason(data, why):
    with pytest.raises(ReportRejected, match=why):
        decode_report(data)


def test_newer_means_new_agent_or_higher_sequence():
    n = node_from_report(report(sequence=5), 1.0)
    assert not is_newer(n, "a", 5)
    assert not is_newer(n, "a", 4), "replayed or reordered report"
    assert is_newer(n, "a", 6)
    assert is_newer(n, "b", 1), "restarted agent starts again at 1"
    assert is_newer(None, "a", 1)


def test_apply_report_keeps_receive_time_of_first_sight():
    t, changed = apply_report({}, report(sequence=1), 10.0)
    assert changed and t[("edge", "n1")].received_at == 10.0
    t2, changed = apply_report(t, report(sequence=1), 20.0)
    assert not changed and t2[("edge", "n1")].received_at == 10.0


def test_expiry_by_own_ttl_on_the_gateway_clock():
    t, _ = apply_report({}, report(ttl_ms=2000), 100.0)
    assert drop_expired(t, 101.9)
    assert drop_expired(t, 102.1) == {}
    # No ttl given: three intervals.
    n = node_from_report(report(ttl_ms=0, interval_ms=500), 0.0)
    assert n.ttl_s == 1.5


def test_age_from_ttl_uses_redis_clock_only():
    assert age_from_ttl(2000, 1500) == 0.5
    assert age_from_ttl(2000, 2000) == 0.0
    assert age_from_ttl(0, 100) == 0.0
    assert age_from_ttl(2000, -2) == 0.0  # key without TTL / missing


def node(site="edge", name="n1", *, healthy=True, gpus=(), kv=None, run=None, wait=None, maxr=0, at=0.0, ttl=10.0):
    return NodeLoad(site, name, "a", 1, healthy, tuple(gpus), run, wait, kv, maxr, at, ttl)


def test_aggregation_rules():
    g = lambda u, used, tot: GpuLoad(u, used, tot)  # noqa: E731
    n1 = node(name="n1", gpus=[g(1.0, 80, 100), g(0.0, 0, 100)], kv=0.2, run=4, wait=0, maxr=64, at=1.0)
    n2 = node(name="n2", gpus=[g(0.5, 50, 100)], kv=0.9, run=10, wait=3, maxr=64, at=2.0)
    s = aggregate_site("edge", [n1, n2])
    assert s.gpus == 3
    assert s.gpu_utilization == pytest.approx(0.5)  # GPU-weighted (1+0+0.5)/3
    assert s.memory_used_fraction == pytest.approx(130 / 300)
    assert s.kv_cache_usage == 0.9  # worst node
    assert (s.requests_running, s.requests_waiting, s.max_running) == (14, 3, 128)
    assert s.updated_at == 2.0 and s.healthy


def test_unhealthy_node_adds_no_load_and_cannot_make_a_site_look_idle():
    busy = node(name="n1", kv=0.95, wait=20, run=50)
    broken = node(name="n2", healthy=False, kv=0.0, wait=0, run=0)
    s = aggregate_site("edge", [busy, broken])
    assert s.kv_cache_usage == 0.95 and s.requests_waiting == 20
    assert (s.nodes, s.healthy_nodes) == (2, 1)
    only_broken = aggregate_site("edge", [broken])
    assert not only_broken.healthy and only_broken.kv_cache_usage is None


def test_engine_unknown_when_no_node_reports_it():
    s = aggregate_site("edge", [node(gpus=[GpuLoad(0.4, None, None)])])
    assert s.kv_cache_usage is None and s.requests_waiting is None and s.gpu_utilization == 0.4


def test_aggregate_drops_expired_nodes():
    live = node(site="edge", name="a", at=100.0, ttl=5)
    dead = node(site="remote", name="b", at=90.0, ttl=5)
    out = aggregate([live, dead], now=102.0)
    assert set(out) == {"edge"}


def test_pressure_signals():
    from extproc.gateway.routing.views import site_pressure

    base = aggregate_site("edge", [node(kv=0.2, run=4, wait=0)])
    assert site_pressure(base, queue_ref=32, running_capacity=64) == pytest.approx(0.2)  # KV dominates
    # Compute-bound: KV low, nothing waiting, but more running than the site's capacity.
    busy = aggregate_site("edge", [node(kv=0.3, run=48, wait=0)])
    assert site_pressure(busy, queue_ref=32, running_capacity=16) == pytest.approx(3.0)
    # The engine's own capacity hint wins over the configured one.
    hinted = aggregate_site("edge", [node(kv=0.1, run=48, wait=0, maxr=96)])
    assert site_pressure(hinted, queue_ref=32, running_capacity=16) == pytest.approx(0.5)
    queued = aggregate_site("edge", [node(kv=0.5, run=1, wait=64)])
    assert site_pressure(queued, queue_ref=32, running_capacity=64) == pytest.approx(2.0)
    gpu_only = aggregate_site("edge", [node(gpus=[GpuLoad(0.7, None, None)])])
    assert site_pressure(gpu_only, 32, 64) == pytest.approx(0.7)
    assert site_pressure(aggregate_site("edge", [node()]), 32, 64) is None
