"""The batching worker: one model thread, cross-request batches, bounded queue, deadlines, loop never blocked.
No timing assertions: gates (threading.Event) make the interleavings deterministic."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from extproc.gateway.compression.core.fine import FineCompressor, FineResult, Skipped
from extproc.gateway.compression.runtime.model import FinePipeline, TokenClassifier
from extproc.tools.evalcompress.tinymodel import generate_text
from extproc.gateway.compression.runtime.worker import BatchingCompressor


class GatedModel:
    """Delegates to the real classifier; records batches; optionally blocks until released / fails."""

    def __init__(self, real: TokenClassifier) -> None:
        self.real = real
        self.cls_id, self.sep_id, self.pad_id = real.cls_id, real.sep_id, real.pad_id
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.fail = False

    def forward(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        self.entered.set()
        assert self.gate.wait(60), "gate never opened"
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(len(inputs))
        return self.real.forward(inputs)


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path) -> tuple[TokenClassifier, FinePipeline]:
    return TokenClassifier.load(tiny_model_dir), FinePipeline.load(tiny_model_dir)


def make(parts, **kw) -> tuple[BatchingCompressor, GatedModel]:
    model = GatedModel(parts[0])
    kw.setdefault("warmup", False)
    return BatchingCompressor(model, parts[1], **kw), model  # type: ignore[arg-type]


async def test_concurrent_requests_share_forward_passes_and_match_single_path(parts) -> None:
    comp, model = make(parts)
    model.gate.clear()
    # A first request occupies the worker; the next six queue up and are batched in one round.
    first = asyncio.create_task(comp.compress(["Warm up the worker."], 0.5, 30))
    await asyncio.to_thread(model.entered.wait, 30)
    texts = [[generate_text(n, seed=s)] for s, n in enumerate((2, 5, 8, 3, 6, 4))]
    tasks = [asyncio.create_task(comp.compress(t, 0.5, 30)) for t in texts]
    await asyncio.sleep(0.05)
    model.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert max(model.batches) > 1  # chunks of different requests in one forward pass
    assert len(model.batches) < 1 + len(texts)
    expected = [parts[1].compress_sync(parts[0], t, 0.5) for t in texts]
    for t, r, e in zip(texts, results, expected):
        assert isinstance(r, FineResult), r
        assert list(r.texts) == e
        assert r.tokens_after[0] < r.tokens_before[0]
        assert r.queued_s >= 0 and r.elapsed_s >= r.queued_s
    assert comp.tokens_per_second() is not None and comp.tokens_per_second() > 0
    await comp.close()


async def test_event_loop_runs_while_the_model_computes(parts) -> None:
    comp, model = make(parts)
    model.gate.clear()
    task = asyncio.create_task(comp.compress([generate_text(5)], 0.5, 30))
    # The forward pass cannot finish until this coroutine, on the loop, opens the gate: if compress()
    # blocked the loop, this would deadlock (and the gate's 60 s wait would fail the test).
    await asyncio.to_thread(model.entered.wait, 30)
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    model.gate.set()
    assert isinstance(await task, FineResult) and ticks == 5
    await comp.close()


async def test_full_queue_is_saturated_immediately(parts) -> None:
    comp, model = make(parts, max_queue=1)
    model.gate.clear()
    running = asyncio.create_task(comp.compress([generate_text(3)], 0.5, 30))
    await asyncio.to_thread(model.entered.wait, 30)
    queued = asyncio.create_task(comp.compress([generate_text(3, seed=1)], 0.5, 30))
    await asyncio.sleep(0)
    assert await comp.compress([generate_text(3, seed=2)], 0.5, 30) == Skipped("saturated")
    model.gate.set()
    assert isinstance(await running, FineResult) and isinstance(await queued, FineResult)
    await comp.close()


async def test_deadline_passes_while_waiting(parts) -> None:
    comp, model = make(parts)
    model.gate.clear()
    running = asyncio.create_task(comp.compress([generate_text(3)], 0.5, 30))
    await asyncio.to_thread(model.entered.wait, 30)
    assert await comp.compress([generate_text(4)], 0.5, 0.05) == Skipped("deadline")
    model.gate.set()
    assert isinstance(await running, FineResult)
    await comp.close()


async def test_deadline_predicted_from_measured_speed(parts) -> None:
    comp, model = make(parts)
    assert isinstance(await comp.compress([generate_text(3)], 0.5, 30), FineResult)
    n = len(model.batches)
    comp._model_tps.value = 10.0  # pretend the model does 10 tokens/s: a 300-token job needs 30 s
    assert await comp.compress([generate_text(20)], 0.5, 1.0) == Skipped("deadline")
    assert len(model.batches) == n  # answered without touching the model
    await comp.close()


async def test_skips_empty_language_and_keeps_unsupported_text_unchanged(parts) -> None:
    comp, _ = make(parts)
    assert await comp.compress([], 0.5, 5) == Skipped("empty")
    assert await comp.compress(["  ", ""], 0.5, 5) == Skipped("empty")
    chinese = "这是一个很长的中文句子没有空格，我们不能安全地压缩它。"
    assert await comp.compress([chinese], 0.5, 30) == Skipped("language")
    en = generate_text(6, seed=4)
    r = await comp.compress([chinese, en, ""], 0.5, 30)
    assert isinstance(r, FineResult)
    assert r.texts[0] == chinese and r.texts[2] == ""
    assert r.tokens_before[0] == r.tokens_after[0]
    assert r.tokens_after[1] < r.tokens_before[1]
    same = await comp.compress([en], 1.0, 30)
    assert isinstance(same, FineResult) and same.texts == (en,)
    await comp.close()


async def test_model_failure_is_skipped_and_worker_survives(parts) -> None:
    comp, model = make(parts)
    model.fail = True
    assert await comp.compress([generate_text(3)], 0.5, 30) == Skipped("error")
    model.fail = False
    assert isinstance(await comp.compress([generate_text(3)], 0.5, 30), FineResult)
    await comp.close()
    assert await comp.compress([generate_text(3)], 0.5, 30) == Skipped("saturated")


async def test_from_path_with_int8_and_protocol(tiny_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("AIGRID_COMPRESSION_MODEL", str(tiny_model_dir))
    comp = await asyncio.to_thread(BatchingCompressor.from_path, None, quantize=True)
    fc: FineCompressor = comp
    r = await fc.compress([generate_text(10, seed=9)], 0.4, 30)
    assert isinstance(r, FineResult) and r.tokens_after[0] < r.tokens_before[0]
    assert fc.tokens_per_second() is not None
    await fc.close()
