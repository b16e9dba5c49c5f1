"""Agent → real Redis → LoadMapReader snapshot, with real HTTP metrics endpoints on loopback.

Every wait is bounded (wait_for) and no test asserts a duration: the bounds only stop a broken test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import pytest
from agent_helpers import MetricsServer, Page, RedisProc, agent_subprocess, data, reading, wait_for

from extproc.agent.config import AgentConfig
from extproc.agent.runner import Agent
from extproc.wire.redisconn.settings import RedisSettings
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.loadreport.load_report_pb2 import NodeLoadReport

KEYS = RedisKeys()


def settings(redis: RedisProc) -> RedisSettings:
    # Short resync and backoff so recovery happens quickly in tests.
    return RedisSettings(url=redis.url, resync_interval_s=0.3, connect_timeout_s=0.5, reconnect_max_backoff_s=0.4)


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def make_agent(redis: RedisProc, srv: MetricsServer, **kw: object) -> Agent:
    cfg = dict(
        site="edge", node="gpu-1", redis=settings(redis), nvml=False, interval_ms=50,
        vllm_urls=[srv.url("/vllm/metrics")], dcgm_urls=[srv.url("/dcgm/metrics")],
    )
    cfg.update(kw)
    return Agent(AgentConfig(**cfg))  # type: ignore[arg-type]


async def test_agent_report_reaches_the_gateway_snapshot(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/vllm/metrics"] = Page(data("vllm_v0_10.txt"))
    metrics_server.pages["/dcgm/metrics"] = Page(data("dcgm_h100.txt"))
    async with reading(settings(redis_proc)) as reader, running(make_agent(redis_proc, metrics_server)):
        await wait_for(lambda: "edge" in reader.snapshot.sites, what="edge in snapshot")
        site = reader.snapshot.sites["edge"]
        assert (site.nodes, site.healthy_nodes, site.gpus) == (1, 1, 2)
        assert (site.requests_running, site.requests_waiting) == (7, 3)
        assert site.kv_cache_usage == pytest.approx(0.4213)
        assert site.gpu_utilization == pytest.approx((0.93 + 0.12) / 2)
        assert site.stale_sources == ()

        # Load changes on the engine → the map follows.
        metrics_server.pages["/vllm/metrics"] = Page(data("vllm_v0_6.txt"))
        await wait_for(lambda: reader.snapshot.sites["edge"].requests_waiting == 12, what="new load visible")
        assert reader.snapshot.sites["edge"].kv_cache_usage == pytest.approx(0.9871)

        # The engine endpoint fails → its source goes stale and the node unhealthy (never "idle").
        metrics_server.pages["/vllm/metrics"] = Page("oops\n", status=500)
        await wait_for(lambda: not reader.snapshot.sites["edge"].healthy, what="node unhealthy")
        site = reader.snapshot.sites["edge"]
        assert site.stale_sources == (f"vllm:{metrics_server.url('/vllm/metrics')}",)
        assert site.requests_running is None and site.kv_cache_usage is None


async def test_slow_garbage_and_cut_off_endpoints_go_stale(
    redis_proc: RedisProc, metrics_server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A raw TCP endpoint that promises 5000 bytes and hangs up after a few: a cut-off transfer.
    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n")
        writer.write(data("vllm_v0_10.txt")[:300].encode())
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(cut_off, "127.0.0.1", 0)
    raw_url = f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}/metrics"
    metrics_server.pages["/slow/metrics"] = Page(data("vllm_v0_10.txt"), delay_s=5)
    metrics_server.pages["/garbage/metrics"] = Page("\x00\x01 not prometheus {{{\n")
    metrics_server.pages["/dcgm/metrics"] = Page(data("dcgm_h100.txt"))
    urls = [metrics_server.url("/slow/metrics"), metrics_server.url("/garbage/metrics"), raw_url]
    agent = make_agent(redis_proc, metrics_server, vllm_urls=urls, scrape_timeout_ms=100, stale_after_ms=300)
    with caplog.at_level(logging.WARNING, logger="extproc.agent"):
        async with reading(settings(redis_proc)) as reader, running(agent):
            await wait_for(lambda: "edge" in reader.snapshot.sites, what="edge in snapshot")
            await wait_for(lambda: len(reader.snapshot.sites["edge"].stale_sources) == 3, what="3 stale sources")
            site = reader.snapshot.sites["edge"]
            assert not site.healthy  # no engine answers: unhealthy, not idle
            seq = reader._nodes[("edge", "gpu-1")].sequence
            await wait_for(lambda: reader._nodes[("edge", "gpu-1")].sequence > seq + 3, what="still publishing")
    raw.close()
    reasons = "\n".join(caplog.messages)
    assert "no complete answer within" in reasons  # slow
    assert "unparseable Prometheus text" in reasons or "no vllm:num_requests_running" in reasons  # garbage
    assert "truncated response" in reasons  # cut off


async def test_killed_agent_drops_out_after_its_ttl(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/metrics"] = Page(data("vllm_v0_10.txt"))
    proc = agent_subprocess([
        "--site", "edge", "--node", "gpu-9", "--redis-url", redis_proc.url, "--no-nvml",
        "--vllm-url", metrics_server.url("/"), "--interval-ms", "100", "--ttl-ms", "800",
    ])
    try:
        async with reading(settings(redis_proc)) as reader:
            await wait_for(lambda: "edge" in reader.snapshot.sites, timeout_s=20, what="agent subprocess visible")
            assert redis_proc.client().exists(KEYS.report("edge", "gpu-9")) == 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await wait_for(lambda: "edge" not in reader.snapshot.sites, what="dead node dropped")
            assert redis_proc.client().exists(KEYS.report("edge", "gpu-9")) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "aigrid agent: site=edge node=gpu-9" in out


async def test_redis_killed_and_restarted_both_sides_recover(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/vllm/metrics"] = Page(data("vllm_v0_10.txt"))
    metrics_server.pages["/dcgm/metrics"] = Page(data("dcgm_h100.txt"))
    agent = make_agent(redis_proc, metrics_server)
    async with reading(settings(redis_proc)) as reader, running(agent):
        await wait_for(lambda: "edge" in reader.snapshot.sites, what="edge in snapshot")
        before = reader._nodes[("edge", "gpu-1")].sequence

        redis_proc.kill()
        await wait_for(lambda: not reader.connected and not agent.publisher.connected, what="both see Redis down")
        # While down the agent keeps building reports but holds only the latest one.
        replaced = agent.publisher.replaced
        await wait_for(lambda: agent.publisher.replaced > replaced + 5, what="reports replaced while down")
        assert agent.publisher.pending is not None
        assert "edge" in reader.snapshot.sites  # the gateway keeps its last snapshot meanwhile

        redis_proc.start()  # same port, empty data set
        await wait_for(lambda: reader.connected and agent.publisher.connected, what="both reconnected")
        await wait_for(
            lambda: ("edge", "gpu-1") in reader._nodes and reader._nodes[("edge", "gpu-1")].sequence > before + 5,
            what="fresh reports after restart",
        )
        assert redis_proc.client().exists(KEYS.report("edge", "gpu-1")) == 1
        assert reader.snapshot.sites["edge"].requests_running == 7


async def test_bad_reports_in_redis_are_rejected_and_never_poison_the_map(
    redis_proc: RedisProc, metrics_server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    metrics_server.pages["/vllm/metrics"] = Page(data("vllm_v0_6.txt"))  # busy: kv 0.99, 12 waiting
    metrics_server.pages["/dcgm/metrics"] = Page(data("dcgm_h100.txt"))
    r = redis_proc.client()

    def report(**kw: object) -> NodeLoadReport:
        base: dict[str, object] = dict(schema_version=1, site="edge", node="evil", agent_id="x", sequence=1,
                                       interval_ms=100, ttl_ms=60_000, healthy=True)
        base.update(kw)
        return NodeLoadReport(**base)  # type: ignore[arg-type]

    idle_nan = report()
    g = idle_nan.gpus.add()
    g.utilization = float("nan")
    idle_nan.engine.endpoints = 1
    idle_nan.engine.kv_cache_usage = 0.0

    negative_kv = report(node="evil2")
    negative_kv.engine.endpoints = 1
    negative_kv.engine.kv_cache_usage = -0.5

    with caplog.at_level(logging.WARNING, logger="extproc.gateway.loadmap"):
        async with reading(settings(redis_proc)) as reader, running(make_agent(redis_proc, metrics_server)):
            await wait_for(lambda: "edge" in reader.snapshot.sites, what="edge in snapshot")
            r.set(KEYS.report("edge", "junk"), b"written by something else")  # foreign value under our prefix
            r.set(KEYS.report("edge", "v2"), report(node="v2", schema_version=2).SerializeToString())
            r.set(KEYS.report("edge", "evil"), idle_nan.SerializeToString())
            r.set(KEYS.report("edge", "evil2"), negative_kv.SerializeToString())
            # A valid report stored under another node's key.
            r.set(KEYS.report("edge", "mismatch"), report(site="remote", node="x").SerializeToString())
            r.publish(KEYS.reports_channel, b"\xff\xfe garbage")
            r.publish(KEYS.reports_channel, idle_nan.SerializeToString())
            r.set("aigrid:reportish", b"not even our key pattern")
            resyncs = reader.resyncs
            await wait_for(lambda: reader.resyncs >= resyncs + 2, what="two full resyncs")
            site = reader.snapshot.sites["edge"]
            assert (site.nodes, site.healthy_nodes) == (1, 1)
            assert "remote" not in reader.snapshot.sites
            assert site.kv_cache_usage == pytest.approx(0.9871) and site.requests_waiting == 12  # still busy
            assert reader.reports_rejected >= 6
    text = "\n".join(caplog.messages)
    assert "schema_version 2 is not 1" in text
    assert "not a fraction" in text
    assert "key does not match its report" in text
    assert "not a NodeLoadReport protobuf" in text
