"""The model worker in a child process: same answers as the in-thread worker, bounded, and a dead child
turns into skips rather than hangs."""

from __future__ import annotations

import asyncio

import pytest

from extproc.gateway.compression.core.fine import FineResult, Skipped
from extproc.gateway.compression.runtime.process import ProcessCompressor
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
        proc._proc.kill()  # the child dies
        await asyncio.to_thread(proc._proc.join, 10)
        res = await asyncio.wait_for(proc.compress(TEXTS, 0.5, 5.0), timeout=15)
        assert res == Skipped("error")
    finally:
        await proc.close()


def test_bad_model_path_fails_at_start(tmp_path):
    with pytest.raises(RuntimeError, match="failed to load the model"):
        ProcessCompressor(str(tmp_path / "no-such-bert-base-multilingual-cased"))
