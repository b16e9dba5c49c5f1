"""Redis Sentinel and Redis Cluster URLs, against real redis-server processes in those modes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from agent_helpers import REDIS_SERVER, MetricsServer, Page, RedisProc, data, free_port, wait_for

from extproc.agent.config import AgentConfig
from extproc.agent.runner import Agent
from extproc.wire.redisconn.settings import RedisSettings
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.wire.redisconn.client import redacted_url


def _wait_ping(port: int, proc: subprocess.Popen[bytes]) -> None:
    c = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            c.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start") from None
            time.sleep(0.02)


@pytest.fixture
def sentinel(redis_proc: RedisProc, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor aigridmaster 127.0.0.1 {redis_proc.port} 1\n"
        "sentinel down-after-milliseconds aigridmaster 60000\n"
    )
    proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ping(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[int]:
    """A one-node Redis Cluster owning all 16384 slots."""
    port = free_port()
    # The cluster bus listens on its own port: by default port + 10000, which for a free port above
    # 55535 does not exist and the server exits (the fixture's old intermittent "did not start").
    bus = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-port", str(bus),
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ping(port, proc)
        c = redis.Redis(port=port)
        c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while c.cluster("info").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _round_trip(url: str, srv: MetricsServer) -> None:
    srv.pages["/metrics"] = Page(data("vllm_v0_10.txt"))
    s = RedisSettings(url=url, resync_interval_s=0.3, reconnect_max_backoff_s=0.4)
    agent = Agent(AgentConfig(site="edge", node="n1", nvml=False, interval_ms=50, redis=s, vllm_urls=[srv.url("/")]))
    reader = LoadMapReader(s)
    reader.start()
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: "edge" in reader.snapshot.sites, what=f"report via {url}")
        assert reader.snapshot.sites["edge"].requests_running == 7
        resyncs = reader.resyncs
        await wait_for(lambda: reader.resyncs > resyncs, what="a full resync (SCAN) through this client")
        assert "edge" in reader.snapshot.sites
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        try:
            await asyncio.wait_for(reader.stop(), 5)
        except asyncio.TimeoutError:
            pass


async def test_sentinel_url(sentinel: int, metrics_server: MetricsServer) -> None:
    await _round_trip(f"redis+sentinel://127.0.0.1:{sentinel}/aigridmaster", metrics_server)


async def test_cluster_url(cluster: int, metrics_server: MetricsServer) -> None:
    await _round_trip(f"redis+cluster://127.0.0.1:{cluster}", metrics_server)


def test_redacted_url_hides_secrets() -> None:
    assert redacted_url("rediss://gw:s3cret@r:6380/0") == "rediss://gw:***@r:6380/0"
    assert redacted_url("redis+sentinel://:pw@a:1,b:2/m?sentinel_password=x") == "redis+sentinel://***@a:1,b:2/m?..."
