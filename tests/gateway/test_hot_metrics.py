"""The request path's lock-free metrics (`server.metrics.Hot*`) expose exactly what prometheus_client's own
Counter / Gauge / Histogram would for the same observations (less the `*_created` series)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from extproc.gateway.server.metrics import GatewayMetrics, HotCollector, HotCounter, HotHistogram

BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5)


def text(reg: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(reg).decode().splitlines() if "_created" not in line]


def test_hot_metrics_expose_what_prometheus_client_would():
    rng = random.Random(7)
    ref, hot = CollectorRegistry(), CollectorRegistry()
    c_ref = Counter("t_decisions", "Routing decisions", ["site", "step"], registry=ref)
    g_ref = Gauge("t_streams", "streams", registry=ref)
    h_ref = Histogram("t_phase_seconds", "phase time", ["phase"], buckets=BUCKETS, registry=ref)
    u_ref = Counter("t_tokens", "tokens", registry=ref)
    c_hot = HotCounter("t_decisions", "Routing decisions", ("site", "step"))
    g_hot = HotCounter("t_streams", "streams", gauge=True)
    h_hot = HotHistogram("t_phase_seconds", "phase time", ("phase",), BUCKETS)
    u_hot = HotCounter("t_tokens", "tokens")
    hot.register(HotCollector([c_hot, g_hot, h_hot, u_hot]))
    for _ in range(2000):
        site, step = rng.choice(["edge", "remote"]), rng.choice(["home", "spill", "affinity"])
        c_ref.labels(site, step).inc()
        c_hot.labels(site, step).inc()
        # Bucket edges exactly, and values beyond the last bound (+Inf).
        v = rng.choice([*BUCKETS, rng.uniform(0, 3), rng.uniform(0, 0.001)])
        phase = rng.choice(["request_headers", "request_body"])
        h_ref.labels(phase).observe(v)
        h_hot.labels(phase).observe(v)
        n = rng.randint(0, 500)
        u_ref.inc(n)
        u_hot.inc(n)
        if rng.random() < 0.5:
            g_ref.inc()
            g_hot.inc()
        else:
            g_ref.dec()
            g_hot.dec()
    want, got = text(ref), text(hot)
    # Same samples; floating sums may differ in the last digit from summation order only.
    assert len(want) == len(got)
    for a, b in zip(sorted(want), sorted(got)):
        if a.startswith("t_phase_seconds_sum"):
            ka, va = a.rsplit(" ", 1)
            kb, vb = b.rsplit(" ", 1)
            assert ka == kb and abs(float(va) - float(vb)) < 1e-9
        else:
            assert a == b


def test_labels_are_checked_and_children_kept():
    c = HotCounter("t_x", "x", ("a",))
    assert c.labels("1") is c.labels("1")
    try:
        c.labels("1", "2")
    except ValueError:
        pass
    else:
        raise AssertionError("wrong label count accepted")


def test_gateway_metrics_export_the_request_path_names():
    m = GatewayMetrics()
    m.decisions.labels("edge", "home", "standard").inc()
    m.phase_seconds.labels("request_body").observe(0.0002)
    m.streams.inc()
    out = generate_latest(m.registry).decode()  # label names sorted, as prometheus_client writes them
    assert 'aigrid_decisions_total{site="edge",sla="standard",step="home"} 1.0' in out
    assert 'aigrid_processor_phase_seconds_bucket{le="0.00025",phase="request_body"} 1.0' in out
    assert "# TYPE aigrid_active_streams gauge" in out and "aigrid_active_streams 1.0" in out
    assert "aigrid_prompt_tokens_before_total 0.0" in out
