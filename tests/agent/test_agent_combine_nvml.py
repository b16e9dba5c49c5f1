"""The pure combine step, and the NVML adapter with only the NVML library's functions substituted."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pynvml
import pytest

from extproc.agent.combine import SourceKind, SourceReading, SourceState, combine
from extproc.agent.config import AgentConfig
from extproc.agent.dcgm import GpuSample
from extproc.agent.nvml import NvmlReader, NvmlUnavailable
from extproc.agent.prometheus import EngineSample
from extproc.agent.runner import Agent
from extproc.wire.loadreport.codec import decode_report, encode_report

ARGS = dict(site="edge", node="n1", agent_id="a", sequence=1, sent_unix_ms=0, interval_ms=250, ttl_ms=2000)
GPU = SourceKind.gpu
ENG = SourceKind.engine


def test_engines_sum_requests_worst_kv_and_gpus_dedupe_by_uuid() -> None:
    g = GpuSample(0, "GPU-a", "H100", 0.5, 10, 100)
    r = combine(
        [
            SourceReading("nvml", GPU, True, (g,)),
            SourceReading("dcgm:x", GPU, True, (g, GpuSample(1, "GPU-b", "H100", 0.1))),
            SourceReading("vllm:1", ENG, True, engine=EngineSample(3, 1, 0.2)),
            SourceReading("vllm:2", ENG, True, engine=EngineSample(4, 5, 0.8, 16)),
            SourceReading("vllm:3", ENG, False),
        ],
        **ARGS,
    )
    assert [x.uuid for x in r.gpus] == ["GPU-a", "GPU-b"]
    assert (r.engine.endpoints, r.engine.requests_running, r.engine.requests_waiting) == (2, 7, 6)
    assert r.engine.kv_cache_usage == 0.8 and r.engine.max_running == 16
    assert r.healthy and list(r.stale_sources) == ["vllm:3"]
    assert decode_report(encode_report(r)) == r


def test_all_engines_silent_means_unhealthy_not_idle() -> None:
    r = combine([SourceReading("vllm:1", ENG, False), SourceReading("nvml", GPU, True, (GpuSample(0, "u", "", 0.0),))], **ARGS)
    assert not r.healthy and r.engine.endpoints == 0
    assert list(r.stale_sources) == ["vllm:1"]


def test_gpu_only_node_health() -> None:
    assert combine([SourceReading("nvml", GPU, True, ())], **ARGS).healthy
    assert not combine([SourceReading("dcgm:x", GPU, False)], **ARGS).healthy
    assert combine([], **ARGS).healthy  # heartbeat-only agent
    assert not combine([], **ARGS).HasField("engine")


def test_source_state_goes_stale_after_its_bound() -> None:
    s = SourceState("vllm:x", ENG)
    assert not s.reading(0.0, 1.0).fresh  # never succeeded
    s.ok(10.0, engine=EngineSample(1, 0, None))
    assert s.reading(10.9, 1.0).fresh
    s.failed("HTTP 500")
    assert s.reading(10.9, 1.0).fresh  # last good sample still within stale_after
    assert not s.reading(11.1, 1.0).fresh
    assert s.reading(11.1, 1.0).engine is None  # stale figures are not replayed


class FakeNvmlLib:
    """Stands in for the NVML C library alone: the pynvml functions the adapter calls."""

    def __init__(self, gpus: list[dict], fail_init: bool = False) -> None:
        self.gpus = gpus
        self.fail_init = fail_init
        self.shutdowns = 0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def need(i: int) -> dict:
            return self.gpus[i]

        def init() -> None:
            if self.fail_init:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

        def not_supported(*_: object) -> None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        def field(name: str):  # type: ignore[no-untyped-def]
            def get(h: int, *_: object):  # type: ignore[no-untyped-def]
                v = need(h).get(name)
                if v is None:
                    not_supported()
                return v
            return get

        mp.setattr(pynvml, "nvmlInit", init)
        mp.setattr(pynvml, "nvmlShutdown", lambda: setattr(self, "shutdowns", self.shutdowns + 1))
        mp.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.gpus))
        mp.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
        mp.setattr(pynvml, "nvmlDeviceGetUUID", field("uuid"))
        mp.setattr(pynvml, "nvmlDeviceGetName", field("name"))
        mp.setattr(pynvml, "nvmlDeviceGetUtilizationRates", field("util"))
        mp.setattr(pynvml, "nvmlDeviceGetMemoryInfo", field("mem"))
        mp.setattr(pynvml, "nvmlDeviceGetPowerUsage", field("power_mw"))
        mp.setattr(pynvml, "nvmlDeviceGetTemperature", field("temp"))


H100 = {
    "uuid": "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52", "name": "NVIDIA H100 80GB HBM3",
    "util": SimpleNamespace(gpu=87, memory=40), "mem": SimpleNamespace(used=60 << 30, total=80 << 30, free=20 << 30),
    "power_mw": 612_345, "temp": 61,
}


def test_nvml_adapter_reads_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvmlLib([H100, {**H100, "uuid": "GPU-2", "power_mw": None, "temp": None}])
    lib.install(monkeypatch)
    reader = NvmlReader()
    assert reader.open() == 2
    g0, g1 = reader.sample()
    assert (g0.index, g0.uuid, g0.name) == (0, H100["uuid"], "NVIDIA H100 80GB HBM3")
    assert g0.utilization == pytest.approx(0.87)
    assert (g0.memory_used_bytes, g0.memory_total_bytes) == (60 << 30, 80 << 30)
    assert g0.power_watts == pytest.approx(612.345) and g0.temperature_c == 61
    # A field the board does not support is None, not zero, and not an error for the whole GPU.
    assert g1.power_watts is None and g1.temperature_c is None and g1.utilization == pytest.approx(0.87)
    reader.close()
    assert lib.shutdowns == 1


def test_nvml_missing_is_reported_once_and_disabled(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    FakeNvmlLib([], fail_init=True).install(monkeypatch)
    with pytest.raises(NvmlUnavailable):
        NvmlReader().open()

    async def run() -> None:
        agent = Agent(AgentConfig(site="edge", node="n1", nvml=True))
        with caplog.at_level(logging.WARNING):
            await agent.open()
            await agent.poll_all()
            r = agent.build_report()
            await agent.close()
        assert "nvml" in agent.disabled and agent.sources == []
        assert r is not None and r.healthy and len(r.gpus) == 0
        assert sum("nvml disabled" in m for m in caplog.messages) == 1

    asyncio.run(run())


def test_real_pynvml_on_this_host_is_handled() -> None:
    """No substitution: on a CPU host the real library is absent and the adapter says so."""
    reader = NvmlReader()
    try:
        count = reader.open()
    except NvmlUnavailable as exc:
        assert "NVML" in str(exc)
        return
    assert count >= 1 and len(reader.sample()) == count  # a GPU host
    reader.close()


def test_agent_with_substituted_nvml_builds_a_valid_report(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvmlLib([H100]).install(monkeypatch)

    async def run() -> None:
        agent = Agent(AgentConfig(site="edge", node="n1"))
        await agent.open()
        await agent.poll_all()
        r = agent.build_report()
        await agent.close()
        assert r is not None and r.healthy and len(r.gpus) == 1
        assert r.gpus[0].utilization == pytest.approx(0.87) and not r.stale_sources

    asyncio.run(run())


def test_nvml_query_error_marks_source_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvmlLib([H100])
    lib.install(monkeypatch)

    async def run() -> None:
        agent = Agent(AgentConfig(site="edge", node="n1", stale_after_ms=10))
        await agent.open()
        await agent.poll_all()

        def lost(*_: object) -> None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lost)
        await asyncio.sleep(0.05)
        await agent.poll_all()
        r = agent.build_report()
        reason = agent.sources[0].state.last_error or ""
        await agent.close()
        assert r is not None and list(r.stale_sources) == ["nvml"] and len(r.gpus) == 0
        assert "NVML query failed" in reason

    asyncio.run(run())
