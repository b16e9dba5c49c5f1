"""RTT probe (pure smoothing + a real HTTP health endpoint), `aigrid status --watch`, `aigrid agent --once`."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess

import pytest
from agent_helpers import MetricsServer, Page, RedisProc, agent_subprocess, data, wait_for
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from extproc.agent.config import AgentConfig
from extproc.agent.runner import Agent
from extproc.gateway.config.schema import GatewayConfig
from extproc.wire.redisconn.settings import RedisSettings
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.gateway.loadmap.rtt import RttEstimate, RttProbe, ewma, probe_urls, update_estimate
from extproc.gateway.operator.watch import watch_status


def test_ewma() -> None:
    assert ewma(None, 10.0, 0.3) == 10.0
    assert ewma(10.0, 20.0, 0.5) == 15.0
    assert ewma(10.0, 20.0, 1.0) == 20.0
    with pytest.raises(ValueError):
        ewma(1.0, 2.0, 0.0)


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=50), st.floats(min_value=0.01, max_value=1))
def test_ewma_stays_within_the_samples(samples: list[float], alpha: float) -> None:
    v = None
    for s in samples:
        v = ewma(v, s, alpha)
    assert v is not None and min(samples) - 1e-6 <= v <= max(samples) + 1e-6


def test_failures_keep_then_withdraw_the_estimate() -> None:
    e = update_estimate(RttEstimate(), 12.0, 0.3, 3)
    e = update_estimate(e, None, 0.3, 3)
    e = update_estimate(e, None, 0.3, 3)
    assert e.ms == 12.0 and e.failures == 2
    e = update_estimate(e, None, 0.3, 3)
    assert e.ms is None  # the configured RTT applies again
    assert update_estimate(e, 5.0, 0.3, 3) == RttEstimate(5.0, 0, 2)


def gateway_config(redis_url: str, port: int) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "sites": [
            {"name": "edge", "role": "edge", "endpoints": [f"127.0.0.1:{port}"], "rtt_ms": 1},
            {"name": "remote", "endpoints": ["127.0.0.1:1"], "rtt_ms": 40},
        ],
        "redis": {"url": redis_url, "resync_interval_s": 0.3},
    })


async def test_rtt_probe_feeds_the_load_map(metrics_server: MetricsServer) -> None:
    metrics_server.pages["/health"] = Page("")
    config = gateway_config("redis://127.0.0.1:1/0", metrics_server.port)
    assert probe_urls(config)["edge"] == metrics_server.url("/health")
    reader = LoadMapReader(config.redis)  # not started: only its RTT hook is exercised
    probe = RttProbe(config, reader.set_measured_rtt, urls={"remote": "http://127.0.0.1:1/health"},
                     interval_s=0.05, timeout_s=0.5, max_failures=2)
    probe.start()
    try:
        await wait_for(lambda: probe.estimates["edge"].samples >= 3, what="3 edge probes")
        await wait_for(lambda: probe.estimates["remote"].failures >= 2, what="remote failures")
        snap = reader.snapshot
        assert snap.measured_rtt_ms["edge"] > 0
        assert "remote" not in snap.measured_rtt_ms  # unreachable: configured figure stays in force
        assert metrics_server.hits["/health"] >= 3
        metrics_server.pages["/health"] = Page("down", status=503)
        await wait_for(lambda: "edge" not in reader.snapshot.measured_rtt_ms, what="edge withdrawn after 5xx")
    finally:
        await probe.stop()


async def test_status_watch_shows_the_live_map(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/metrics"] = Page(data("vllm_v0_10.txt"))
    config = gateway_config(redis_proc.url, metrics_server.port)
    agent = Agent(AgentConfig(site="edge", node="gpu-1", nvml=False, interval_ms=50,
                              redis=RedisSettings(url=redis_proc.url), vllm_urls=[metrics_server.url("/")]))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    out = io.StringIO()
    try:
        await wait_for(lambda: agent.publisher.sent > 0, what="agent published")
        await watch_status(config, 0.1, console=Console(file=out, width=220, force_terminal=False), iterations=8)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    text = out.getvalue()
    assert "edge" in text and "remote" in text and "healthy" in text
    assert "42%" in text  # KV usage from the vLLM page


async def test_agent_once_prints_the_report_and_publishes(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/metrics"] = Page(data("sglang.txt"))
    proc = agent_subprocess(["--site", "edge", "--node", "n1", "--redis-url", redis_proc.url,
                             "--sglang-url", metrics_server.url("/"), "--nvml", "--once"])
    stdout, _ = await asyncio.to_thread(proc.communicate, None, 30)
    assert proc.returncode == 0, stdout
    text = stdout.decode()
    report = json.loads(text[text.index("{"): text.rindex("}") + 1])
    assert report["engine"]["requests_waiting"] == 2826 and report["healthy"] is True
    assert "nvml disabled" in text  # no GPU here: said once, clearly, and the rest still published
    assert redis_proc.client().exists("aigrid:report:edge:n1") == 1


def test_bad_agent_configuration_names_the_key() -> None:
    proc = agent_subprocess(["--site", "Not A Site", "--once", "--dry-run", "--no-nvml"])
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and b"site" in stdout
    with pytest.raises(subprocess.TimeoutExpired):
        raise subprocess.TimeoutExpired("x", 0)  # (keeps subprocess imported for readers of this file)
