"""The batching worker: one model-owning thread shared by all gRPC streams; implements FineCompressor.

Why a thread and not the event loop: a forward pass of a BERT-base classifier takes hundreds of ms on
CPU; the gRPC loop must keep routing meanwhile. The loop only enqueues a job and awaits a
concurrent.futures.Future wrapped with asyncio.wrap_future (the worker resolves it from its thread; the
wrapper hops back to the loop with call_soon_threadsafe). Compression is an optimisation, never a queue:
  * the queue is bounded: full -> Skipped('saturated') at once;
  * a job whose predicted finish (backlog + its own tokens, at the measured speed) is past its deadline
    -> Skipped('deadline'), at submission and again when the worker picks it up;
  * the caller stops waiting at the deadline (Skipped('deadline')); a job not yet started is dropped.
Each round, the worker takes queued jobs up to a token budget, cuts every text into chunks, sorts all
chunks by length and runs padded-to-longest batches; a job is answered as soon as its last chunk is done.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from extproc.gateway.compression.core import keep as lingua
from extproc.gateway.compression.core.fine import FineResult, Skipped
from extproc.gateway.compression.core.keep import UnitMode
from extproc.gateway.compression.offline import model_path_from_env
from extproc.gateway.compression.runtime.model import (
    Classifier,
    FinePipeline,
    OrtClassifier,
    Prepared,
    TokenClassifier,
)

log = logging.getLogger(__name__)

# Rough model tokens per UTF-8 byte, only for admission before tokenization (mBERT: ~4.5 bytes per
# English token, ~3 bytes (one kanji/kana) per Japanese token).
_BYTES_PER_TOKEN = 4.0


def estimate_model_tokens(texts: Sequence[str]) -> int:
    return sum(int(len(t.encode("utf-8", "surrogatepass")) / _BYTES_PER_TOKEN) + 2 for t in texts)


@dataclass(eq=False)
class _Job:
    texts: tuple[str, ...]
    rate: float
    submitted: float
    deadline: float  # time.monotonic() value
    est_tokens: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    abandoned: bool = False  # the caller stopped waiting
    # Filled by the worker:
    started: float = 0.0
    prepared: list[Prepared | None] = field(default_factory=list)
    probs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    remaining: int = 0


class Ewma:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def update(self, x: float) -> float:
        self.value = x if self.value is None else self.alpha * x + (1 - self.alpha) * self.value
        return self.value

    def step(self, before: float | None, x: float) -> None:
        """Set the value to one EWMA step from `before`: lets a round refine its own sample after every
        batch (so the speed is known before the round's first answer) without compounding."""
        self.value = x if before is None else self.alpha * x + (1 - self.alpha) * before


class BatchingCompressor:
    """FineCompressor backed by one worker thread that owns `model`.

    deadline_s (in compress) is a budget in seconds from the call. tokens_per_second() is measured in
    cl100k tokens of input compressed per second of worker time (the unit the policy's break-even uses).
    """

    def __init__(
        self,
        model: Classifier,
        pipeline: FinePipeline,
        *,
        max_queue: int = 64,
        # CPU defaults: a forward pass costs about the same per token at any batch size on CPU, so big
        # batches and rounds only delay everyone's answer (a round's jobs finish together); short
        # prompts still share passes. On GPU raise both (e.g. 32768) to fill the device.
        max_batch_tokens: int = 1024,
        max_batch_size: int = 64,
        round_tokens: int = 1024,
        num_threads: int | None = 1,
        ewma_alpha: float = 0.3,
        warmup: bool = True,
    ) -> None:
        self.model = model
        self.pipeline = pipeline
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.round_tokens = round_tokens
        self.num_threads = num_threads
        self._lock = threading.Lock()
        self._queued = 0  # jobs waiting (not yet picked up by the worker)
        self._backlog_tokens = 0  # estimated model tokens queued or in progress
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._model_tps = Ewma(ewma_alpha)  # model tokens / s: predicts job cost
        self._llm_tps = Ewma(ewma_alpha)  # cl100k tokens / s: reported
        self.stats = collections.Counter[str]()
        self._closed = False
        self._ready = threading.Event()
        self._warmup = warmup
        self._thread = threading.Thread(target=self._run, name="aigrid-compressor", daemon=True)
        self._thread.start()

    @classmethod
    def from_path(
        cls,
        path: str | Path | None = None,
        *,
        quantize: bool = False,
        device: str = "cpu",
        dtype: str | None = None,
        mode: UnitMode = "word",
        backend: str = "auto",
        onnx_cache_dir: str | Path | None = None,
        **kwargs,
    ) -> "BatchingCompressor":
        """Load the model from a local directory (None: $AIGRID_COMPRESSION_MODEL) and start the worker.
        backend "auto" (int8 on CPU: onnx; else torch), "torch" (fp32/fp16, device/dtype for GPU) or "onnx"
        (CPU, ONNX Runtime with BERT fusions; quantize: ORT dynamic int8; exported once into <model>/onnx or
        onnx_cache_dir).
        Blocking (seconds for a BERT-base model, about a minute on the first ONNX export): call at
        startup or through asyncio.to_thread."""
        model_dir = model_path_from_env(str(path) if path else None)
        model: Classifier
        if backend == "auto":
            # int8 on CPU is ONNX Runtime's (faster here than torch's, and torch's dynamic quantisation is
            # deprecated); fp32 and GPU run on torch.
            backend = "onnx" if quantize and device == "cpu" else "torch"
        if backend == "onnx":
            model = OrtClassifier.load(
                model_dir, quantize=quantize, num_threads=kwargs.get("num_threads", 1), cache_dir=onnx_cache_dir
            )
        elif backend == "torch":
            model = TokenClassifier.load(model_dir, quantize=quantize, device=device, dtype=dtype)
        else:
            raise ValueError(f"unknown compression backend {backend!r} (torch, onnx)")
        pipeline = FinePipeline.load(model_dir, mode=mode)
        return cls(model, pipeline, **kwargs)

    # ---- FineCompressor -------------------------------------------------------------------------

    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        now = time.monotonic()
        if self._closed:
            return self._skip("saturated")
        texts = tuple(texts)
        if not texts or not any(t.strip() for t in texts):
            return self._skip("empty")
        est = estimate_model_tokens(texts)
        deadline = now + deadline_s
        with self._lock:
            tps = self._model_tps.value
            if tps and now + (self._backlog_tokens + est) / tps > deadline:
                return self._skip("deadline")
            if self._queued >= self.max_queue:
                return self._skip("saturated")
            self._queued += 1
            self._backlog_tokens += est
        job = _Job(texts=texts, rate=rate, submitted=now, deadline=deadline, est_tokens=est)
        self._q.put(job)
        waiter = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(waiter, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            job.abandoned = True  # the worker drops it if it has not started; if running, result is ignored
            return self._skip("deadline")

    def tokens_per_second(self) -> float | None:
        return self._llm_tps.value

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        await asyncio.to_thread(self._thread.join, 30.0)

    # ---- introspection --------------------------------------------------------------------------

    def model_tokens_per_second(self) -> float | None:
        return self._model_tps.value

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _skip(self, reason: str) -> Skipped:
        self.stats[f"skipped_{reason}"] += 1
        return Skipped(reason)

    # ---- worker thread --------------------------------------------------------------------------

    def _run(self) -> None:
        if self.num_threads:
            import torch

            # Process-wide, but only this thread runs torch: the default 1 leaves a core for the gRPC loop.
            torch.set_num_threads(self.num_threads)
        if self._warmup:
            self._do_warmup()
        self._ready.set()
        pending: collections.deque[_Job] = collections.deque()
        stop = False
        while not (stop and not pending):
            if not pending:
                item = self._q.get()
                if item is None:
                    stop = True
                    continue
                pending.append(item)
            while True:  # drain without blocking
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    pending.append(item)
            round_jobs: list[_Job] = []
            budget = 0
            while pending and (not round_jobs or budget + pending[0].est_tokens <= self.round_tokens):
                job = pending.popleft()
                budget += job.est_tokens
                round_jobs.append(job)
            with self._lock:
                self._queued -= len(round_jobs)
            if stop:
                for job in round_jobs + list(pending):
                    self._resolve(job, Skipped("saturated"))
                pending.clear()
                continue
            try:
                self._round(round_jobs)
            except Exception:  # never let the worker die: answer everyone, keep serving
                log.exception("compression round failed")
                for job in round_jobs:
                    self._resolve(job, Skipped("error"))

    def _do_warmup(self) -> None:
        """One small forward pass: loads kernels and gives the first cost measurement, so admission
        control has a speed before the first real request."""
        try:
            t0 = time.perf_counter()
            n = 64
            self.model.forward([[self.model.cls_id] + [self.model.pad_id] * (n - 2) + [self.model.sep_id]])
            t0 = time.perf_counter()
            self.model.forward([[self.model.cls_id] + [self.model.pad_id] * (n - 2) + [self.model.sep_id]])
            self._model_tps.update(n / max(time.perf_counter() - t0, 1e-6))
        except Exception:
            log.exception("compressor warm-up failed")

    def _resolve(self, job: _Job, result: FineResult | Skipped) -> None:
        with self._lock:
            self._backlog_tokens -= job.est_tokens
        if job.future.done():
            return  # the caller gave up (deadline, cancellation) and was answered already
        try:
            job.future.set_result(result)
        except concurrent.futures.InvalidStateError:
            return  # cancelled by the caller in the meantime
        self.stats[f"skipped_{result.reason}" if isinstance(result, Skipped) else "compressed"] += 1

    def _round(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        live: list[_Job] = []
        ahead = 0  # model tokens of this round's jobs admitted before this one (they share the batches)
        for job in jobs:
            if job.abandoned or not job.future.set_running_or_notify_cancel():
                self._resolve(job, Skipped("deadline"))
                continue
            now = time.monotonic()
            if now >= job.deadline:
                self._resolve(job, Skipped("deadline"))
                continue
            job.started = now
            try:
                job.prepared = [self.pipeline.prepare(t) if t.strip() else None for t in job.texts]
            except Exception:
                log.exception("compression prepare failed")
                self._resolve(job, Skipped("error"))
                continue
            usable = [p for p in job.prepared if p is not None]
            if not usable:
                self._resolve(job, Skipped("language" if any(t.strip() for t in job.texts) else "empty"))
                continue
            tokens = sum(p.model_tokens for p in usable) if job.rate < 1.0 else 0
            tps = self._model_tps.value
            if tps and time.monotonic() + (ahead + tokens) / tps > job.deadline:
                self._resolve(job, Skipped("deadline"))
                continue
            ahead += tokens
            job.remaining = sum(len(p.inputs) for p in usable) if job.rate < 1.0 else 0
            live.append(job)

        # Every chunk of every live job, batched across jobs.
        items: list[tuple[_Job, int, int]] = []
        inputs: list[list[int]] = []
        for job in live:
            if job.rate >= 1.0:
                continue
            for ti, prep in enumerate(job.prepared):
                if prep is None:
                    continue
                for ci, inp in enumerate(prep.inputs):
                    items.append((job, ti, ci))
                    inputs.append(inp)
        for job in live:
            if job.remaining == 0:
                self._finish(job)
        model_tokens = 0
        all_model = sum(len(x) for x in inputs)
        all_llm = sum(p.tokens_before for j in live if j.rate < 1.0 for p in j.prepared if p is not None)
        model_before, llm_before = self._model_tps.value, self._llm_tps.value
        for batch in lingua.plan_batches([len(x) for x in inputs], self.max_batch_tokens, self.max_batch_size):
            batch = [i for i in batch if not items[i][0].abandoned]
            if not batch:
                continue
            outs = self.model.forward([inputs[i] for i in batch])
            model_tokens += sum(len(inputs[i]) for i in batch)
            # Speed so far this round (preparation included), before anyone of this batch is answered.
            elapsed = max(time.perf_counter() - t0, 1e-9)
            self._model_tps.step(model_before, model_tokens / elapsed)
            self._llm_tps.step(llm_before, all_llm * (model_tokens / all_model) / elapsed)
            for i, probs in zip(batch, outs):
                job, ti, ci = items[i]
                job.probs[(ti, ci)] = probs
                job.remaining -= 1
                if job.remaining == 0:
                    self._finish(job)
        for job in live:  # abandoned mid-round
            if not job.future.done():
                self._resolve(job, Skipped("deadline"))

    def _finish(self, job: _Job) -> None:
        try:
            texts: list[str] = []
            before: list[int] = []
            after: list[int] = []
            for ti, (text, prep) in enumerate(zip(job.texts, job.prepared)):
                if prep is None:  # unsupported or blank: unchanged
                    n = self.pipeline.count(text)
                    texts.append(text)
                    before.append(n)
                    after.append(n)
                    continue
                probs = [job.probs[(ti, ci)] for ci in range(len(prep.inputs))] if job.rate < 1.0 else []
                out, n_after = self.pipeline.finish(prep, probs, job.rate)
                texts.append(out)
                before.append(prep.tokens_before)
                after.append(n_after)
            now = time.monotonic()
            result: FineResult | Skipped = FineResult(
                texts=tuple(texts),
                tokens_before=tuple(before),
                tokens_after=tuple(after),
                elapsed_s=now - job.submitted,
                queued_s=job.started - job.submitted,
            )
        except Exception:
            log.exception("compression finish failed")
            result = Skipped("error")
        job.probs.clear()
        self._resolve(job, result)
