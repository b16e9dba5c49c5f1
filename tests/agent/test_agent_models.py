"""Agents report the models their engines serve (/v1/models) into the load map; pure parsing too."""

from __future__ import annotations

import asyncio

import pytest
from agent_helpers import MetricsServer, Page, RedisProc, data, reading, wait_for

from extproc.agent.combine import SourceKind, SourceReading, combine
from extproc.agent.config import AgentConfig
from extproc.agent.models import models_url, parse_models
from extproc.agent.prometheus import EngineSample
from extproc.agent.runner import Agent
from extproc.wire.redisconn.settings import RedisSettings


@pytest.mark.parametrize(
    "body, want",
    [
        (b'{"object":"list","data":[{"id":"b"},{"id":"a"},{"id":"a"}]}', ("a", "b")),
        (b'{"data":[]}', ()),
        (b'{"data":[{"id":""},{"id":7},{"id":"ok"},"x",{"id":"bad\\u0000id"}]}', ("ok",)),
        (b"not json", None),
        (b'{"data": "nope"}', None),
        (b"[1,2]", None),
    ],
)
def test_parse_models(body, want):
    assert parse_models(body) == want


def test_models_url_and_combine_union():
    assert models_url("http://10.0.0.5:8000/metrics?x=1") == "http://10.0.0.5:8000/v1/models"
    rd = [
        SourceReading("vllm:a", SourceKind.engine, True, engine=EngineSample(1, 0, 0.1, 0, ("m2", "m1"))),
        SourceReading("vllm:b", SourceKind.engine, True, engine=EngineSample(1, 0, 0.1, 0, ("m3",))),
        SourceReading("vllm:c", SourceKind.engine, False),
    ]
    r = combine(rd, site="s", node="n", agent_id="a", sequence=1, sent_unix_ms=0, interval_ms=250, ttl_ms=1000)
    assert list(r.engine.models) == ["m1", "m2", "m3"]


async def test_agent_reports_engine_models_into_the_map(redis_proc: RedisProc, metrics_server: MetricsServer) -> None:
    metrics_server.pages["/vllm/metrics"] = Page(data("vllm_v0_10.txt"))
    metrics_server.pages["/v1/models"] = Page('{"object":"list","data":[{"id":"llama-3.1-8b"},{"id":"qwen"}]}',
                                              content_type="application/json")
    s = RedisSettings(url=redis_proc.url, resync_interval_s=0.3, connect_timeout_s=0.5, reconnect_max_backoff_s=0.4)
    agent = Agent(AgentConfig(site="edge", node="n1", redis=s, nvml=False, interval_ms=50,
                              vllm_urls=[metrics_server.url("/vllm/metrics")]))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        async with reading(s) as reader:
            await wait_for(lambda: "edge" in reader.snapshot.sites and reader.snapshot.sites["edge"].models != (),
                           what="models in the snapshot")
            assert reader.snapshot.sites["edge"].models == ("llama-3.1-8b", "qwen")
            assert metrics_server.hits["/v1/models"] == 1  # polled far less often than metrics
            assert metrics_server.hits["/vllm/metrics"] >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
