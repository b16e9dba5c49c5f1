"""The model worker in a child process: same answers as the in-thread worker, bounded, and a dead child
turns into skips rather than hangs, then is started again by its supervisor."""

from __future__ import annotations

import asyncio

import pytest

from extproc.gateway.compression.core.fine import FineResult, Skipped
import os
import signal
import time

from prometheus_client import CollectorRegistry, generate_latest

from extproc.gateway.compression.runtime.process import WORKER_COMM, ProcessCompressor, RespawnBackoff
from extproc.tools.evalcompress.tinymodel import generate_text
from extproc.gateway.compression.runtime.worker import BatchingCompressor

TEXTS = [generate_text(12, seed=3), generate_text(30, seed=4), generate_text(8, seed=5, japanese=True)]


async def test_same_words_as_the_thread_worker(tiny_model_dir):
    proc = await asyncio.to_thread(ProcessCompressor, str(tiny_model_dir), quantize=False)
    thread = await asyncio.to_thread(BatchingCompressor.from_path, str(tiny_model_dir), quantize=False)
    try:
        for rate in (0.33, 0.5):
            a = await proc.compress(TEXTS, rate, 30.0)
            b = await thread.compress(TEXTS, rate, 30.0)
            assert isinstance(a, FineResult) and isinstance(b, FineResult)
            assert a.texts == b.texts
            assert a.tokens_before == b.tokens_before and a.tokens_after == b.tokens_after
        assert proc.tokens_per_second() is not None
    finally:
        await proc.close()
        await thread.close()


async def test_saturation_and_dead_child(tiny_model_dir):
    proc = await asyncio.to_thread(ProcessCompressor, str(tiny_model_dir), max_in_flight=1)
    try:
        first = asyncio.create_task(proc.compress([generate_text(200, seed=9)], 0.5, 30.0))
        await asyncio.sleep(0)  # first is in flight
        assert await proc.compress(TEXTS, 0.5, 30.0) == Skipped("saturated")
        assert isinstance(await first, (FineResult, Skipped))
    finally:
        await proc.close()


async def _until(cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_killed_child_is_respawned_and_counted(tiny_model_dir):
    """SIGKILL the worker: requests meanwhile are skipped at once (never wait), the supervisor starts a new
    child, /metrics counts the restart, and compression works again."""
    from extproc.gateway.compression.rewriter import CompressionRewriter
    from extproc.gateway.config.compression import CompressionSettings

    proc = await asyncio.to_thread(ProcessCompressor, str(tiny_model_dir), backoff=RespawnBackoff(first_s=0.3))
    registry = CollectorRegistry()
    rewriter = CompressionRewriter(CompressionSettings(enabled=True), fine=proc, registry=registry)
    second = None
    try:
        first = proc.pid()
        assert first is not None
        assert open(f"/proc/{first}/comm").read().strip() == WORKER_COMM
        assert isinstance(await proc.compress(TEXTS, 0.5, 30.0), FineResult)
        text = generate_latest(registry).decode()
        assert "aigrid_compression_worker_up 1.0" in text and "aigrid_compression_worker_restarts_total 0.0" in text

        os.kill(first, signal.SIGKILL)
        await _until(lambda: not proc.up(), 5)
        t0 = time.monotonic()
        assert await proc.compress(TEXTS, 0.5, 5.0) in (Skipped("restarting"), Skipped("error"))
        assert time.monotonic() - t0 < 1.0  # a skip, not a wait
        assert "aigrid_compression_worker_up 0.0" in generate_latest(registry).decode()

        await _until(proc.up, 30)
        second = proc.pid()
        assert second not in (None, first) and proc.restarts == 1 and proc.deaths == 1
        res = await proc.compress(TEXTS, 0.5, 30.0)
        assert isinstance(res, FineResult)
        text = generate_latest(registry).decode()
        assert "aigrid_compression_worker_up 1.0" in text and "aigrid_compression_worker_restarts_total 1.0" in text
    finally:
        await rewriter.close()
    # close() stops the respawned child too (and the supervisor does not start another)
    assert second is not None and not os.path.exists(f"/proc/{second}/comm")
    assert proc.restarts == 1


def test_backoff_doubles_and_resets_after_a_stable_child():
    b = RespawnBackoff(first_s=0.2, max_s=1.0, stable_s=60)
    assert [b.after_death(1.0) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.after_death(61.0) == 0.2  # the child had served a minute: a rare crash, repaired at once
    assert b.after_death(1.0) == 0.4


def test_bad_model_path_fails_at_start(tmp_path):
    with pytest.raises(RuntimeError, match="failed to load the model"):
        ProcessCompressor(str(tmp_path / "no-such-bert-base-multilingual-cased"))
