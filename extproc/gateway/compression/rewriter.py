"""The compression rewriter: the gateway's BodyRewriter for prompt compression.

segment (pure) → rate (pure) → coarse (ranker, off the loop) → fine (FineCompressor, off the loop) →
restore + rebuild (pure) → orjson. Any failure, timeout or doubt leaves the body as it was, with the reason
in the `x-aigrid-compression` header and the `aigrid_compression_requests{outcome}` metric.

`CompressionPipeline.compress` (`pipeline.py`) runs the steps at a given rate; this module is the
adapter around it: `CompressionRewriter.rewrite` adds the load policy, deadline, encoding, metrics and
headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from extproc.gateway.compression.core.cache import quantize_rate
from extproc.gateway.compression.core.coarse import MAX_RANK_CHARS, CoarseRanker
from extproc.gateway.compression.core.fine import FineCompressor
from extproc.gateway.compression.core.pipeline import (
    THREAD_BODY_BYTES,
    CompressionPipeline,
)
from extproc.gateway.compression.core.rate import RateInputs, RatePolicy, decide_rate
from extproc.gateway.compression.core.segment import Segmentation, rebuild
from extproc.gateway.compression.seam import Rewrite, RewriteRequest, Skip
from extproc.gateway.config.compression import CompressionSettings
from extproc.gateway.request.openai import estimate_tokens
from extproc.gateway.routing.framework import Decision
from extproc.wire.contract import CHAT_PATH, COMPLETIONS_PATH, COMPRESSION_HEADER, RESPONSES_PATH

if TYPE_CHECKING:
    from extproc.gateway.compression.runtime.process import ProcessCompressor

log = logging.getLogger(__name__)

# The request header that says what compression did (or why not), and the paths it compresses.
HEADER = COMPRESSION_HEADER
PATHS = (CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH)
# The rewriter's own deadline is this share of compression.deadline_ms, so it answers (with a reason)
# before the gateway's wait_for cancels it.
OWN_DEADLINE_SHARE = 0.85
# Speed assumed for a coarse-only pass (BM25/MiniLM over the documents), for the break-even rule: the
# default of `compression.coarse_tokens_per_s`, which is what the rewriter reads.
COARSE_TOKENS_PER_S = 50_000.0


# ---- metrics ------------------------------------------------------------------------------------------------

def predicted_slack(d: Decision) -> float | None:
    """The slack the compressor's rate follows: the lower of the request's own-class slack and the
    site's (standard-class) slack, where the router predicted them."""
    if d.slack is None:
        return None
    return d.slack if d.site_slack is None else min(d.slack, d.site_slack)

class CompressionMetrics:
    """Prometheus metrics of the compressor, registered on the registry it is given (the gateway's)."""

    def __init__(self, registry: Any = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.requests = Counter(
            "aigrid_compression_requests",
            "Requests seen by the compressor, by outcome (compressed or the skip reason)",
            ["outcome"], registry=r,
        )
        self.tokens_before = Counter(
            "aigrid_compression_tokens_before", "Estimated prompt tokens of compressed requests, before", registry=r
        )
        self.tokens_after = Counter(
            "aigrid_compression_tokens_after", "Estimated prompt tokens of compressed requests, after", registry=r
        )
        self.ratio = Histogram(
            "aigrid_compression_ratio", "Prompt tokens after / before, per compressed request",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=r,
        )
        self.seconds = Histogram(
            "aigrid_compression_seconds", "Time spent per request, by stage (total, coarse, fine)", ["stage"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        self.docs_dropped = Counter(
            "aigrid_compression_documents_dropped", "Documents dropped by the coarse step", registry=r
        )
        self.turns_replayed = Counter(
            "aigrid_compression_turns_replayed",
            "Earlier-turn messages sent as they were rewritten the first time (keeps the prefix cache)", registry=r,
        )
        # The rate promise, per compressed request: the requested keep-rate and the achieved one
        # (compressible tokens after / before), the latter labelled by whether the quality floor bound
        # (floor: kept more than asked, by at most coarse_floor_max_overshoot).
        rate_buckets = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0)
        self.requested_rate = Histogram(
            "aigrid_compression_requested_rate", "Keep-rate asked of the compressor, per compressed request",
            buckets=rate_buckets, registry=r,
        )
        self.achieved_rate = Histogram(
            "aigrid_compression_achieved_rate",
            "Keep-rate achieved (compressible tokens after / before), by whether the quality floor bound",
            ["floor"], buckets=rate_buckets, registry=r,
        )
        self.coarse_decisions = Counter(
            "aigrid_compression_coarse_decisions",
            "Coarse-step selections by what bounded them: rate (the budget) or floor (a flat ranking: more kept)",
            ["decision"], registry=r,
        )


class WorkerCollector(Collector):
    """The model worker process's supervision state, read at scrape time from the ProcessCompressor that
    owns it (its supervisor thread counts; nothing here is updated on the request path)."""

    def __init__(self, worker: ProcessCompressor) -> None:
        self.worker = worker

    def collect(self):  # type: ignore[no-untyped-def]
        up = GaugeMetricFamily(
            "aigrid_compression_worker_up",
            "1 while the compressor's model worker process is serving; 0 while it is being restarted "
            "(requests pass through uncompressed)",
        )
        up.add_metric([], 1.0 if self.worker.up() else 0.0)
        yield up
        restarts = CounterMetricFamily(
            "aigrid_compression_worker_restarts",
            "Times the compressor's model worker process was started again after it died",
        )
        restarts.add_metric([], float(self.worker.restarts))
        yield restarts


# Skip reasons are a fixed vocabulary (bounded metric labels).
SKIP_REASONS = frozenset({
    "path", "nothing_to_compress", "short", "unknown_load", "idle", "deadline", "break_even", "no_gain",
    "no_change", "encode", "error", "fine_saturated", "fine_deadline", "fine_language", "fine_empty",
    "fine_restarting", "fine_error",
})


def _label(reason: str) -> str:
    return reason if reason in SKIP_REASONS else "other"


# ---- rewriter -----------------------------------------------------------------------------------------------
class CompressionRewriter:
    def __init__(
        self,
        settings: CompressionSettings,
        *,
        fine: FineCompressor | None = None,
        ranker: CoarseRanker | None = None,
        registry: Any = None,
    ) -> None:
        self.settings = settings
        self.pipeline = CompressionPipeline(settings, fine, ranker)
        self.metrics = CompressionMetrics(registry)
        if fine is not None:
            # A model is configured, so its runtime (numpy, torch) is installed: only then is it imported.
            from extproc.gateway.compression.runtime.process import ProcessCompressor  # noqa: PLC0415

            if isinstance(fine, ProcessCompressor):
                self.metrics.registry.register(WorkerCollector(fine))
        s = settings
        self.policy = RatePolicy(
            start_pressure=s.start_pressure,
            full_pressure=s.full_pressure,
            floors=s.floors.model_dump(),
            default_floor=s.floors.standard,
            model_floors=dict(s.model_floors),
            fixed_rate=s.fixed_rate,
            min_compressible_tokens=s.min_prompt_tokens,
            break_even=s.break_even,
            margin=s.break_even_margin,
            compressor_tokens_per_s=s.compressor_tokens_per_s,
        )

    def _skip(self, reason: str, t0: float, tokens: int | None = None, extra: str = "") -> Skip:
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.requests.labels(_label(reason)).inc()
        self.metrics.seconds.labels("total").observe(ms / 1000)
        h = f"skip={reason}" + (f" tokens={tokens}" if tokens is not None else "") + f" ms={ms:.0f}" + extra
        return Skip(reason, {HEADER: h})

    def _replay_or_skip(
        self, req: RewriteRequest, seg: Segmentation, reason: str, t0: float, tokens: int | None, extra: str = ""
    ) -> Rewrite | Skip:
        """Nothing new is compressed; but earlier turns we rewrote before still go as they were sent then,
        or the site's cached prefix would stop matching here (whatever the load now)."""
        replayed = self.pipeline.replay(seg)
        n = sum(1 for _, pi in replayed if pi == 0)
        if not n:
            return self._skip(reason, t0, tokens, extra)
        try:
            body = orjson.dumps(rebuild(req.parsed, seg, replayed))
        except (TypeError, orjson.JSONEncodeError):
            return self._skip("encode", t0, tokens)
        self.metrics.turns_replayed.inc(n)
        return Rewrite(body, self._skip(reason, t0, tokens, extra + f" replayed={n}").headers)

    async def rewrite(self, req: RewriteRequest) -> Rewrite | Skip:
        t0 = time.perf_counter()
        try:
            return await self._rewrite(req, t0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("compression failed; body left unchanged")
            return self._skip("error", t0)

    async def _rewrite(self, req: RewriteRequest, t0: float) -> Rewrite | Skip:
        s = self.settings
        if req.path not in PATHS:
            return self._skip("path", t0)
        big = len(req.body) > THREAD_BODY_BYTES
        if big:
            seg = await asyncio.to_thread(self.pipeline.segment, req.path, req.parsed)
        else:
            seg = self.pipeline.segment(req.path, req.parsed)
        if seg.compressible_tokens == 0:
            return self._replay_or_skip(req, seg, "nothing_to_compress", t0, seg.total_tokens)
        deadline_s = s.deadline_ms / 1000.0 * OWN_DEADLINE_SHARE
        site = req.decision.site
        pressure = req.site.pressure if req.site is not None else None
        waiting = req.site_load.requests_waiting if req.site_load is not None else None
        fine = self.pipeline.fine
        inputs = RateInputs(
            compressible_tokens=seg.compressible_tokens,
            sla=req.features.sla.value,
            model=req.features.model,
            pressure=pressure,
            requests_waiting=waiting,
            prefill_tokens_per_s=s.site_prefill_tokens_per_s.get(site, s.prefill_tokens_per_s),
            compressor_tokens_per_s=fine.tokens_per_second() if fine is not None else s.coarse_tokens_per_s,
            deadline_s=deadline_s,
            slack=predicted_slack(req.decision),
            # Pieces compressed before cost a lookup, not model time. No compressible token is in the site's
            # cached prefix: earlier turns are never compressed anew (cached_compressible_tokens = 0).
            precomputed_tokens=sum(
                estimate_tokens(seg.slots[si].pieces[pi].text) for si, pi in seg.compressible()
                if self.pipeline.doc_cache.known(seg.slots[si].pieces[pi].text)
            ),
        )
        coarse_ok = self.pipeline.ranker is not None and s.coarse and seg.rag
        # A coarse-only pass reads a capped prefix of each document, whatever their size.
        coarse_inputs = replace(
            inputs,
            compressor_tokens_per_s=s.coarse_tokens_per_s,
            cost_tokens=sum(min(d.tokens, MAX_RANK_CHARS // 4) for d in seg.documents),
            precomputed_tokens=0,
        )
        use_fine = fine is not None
        decision = decide_rate(self.policy, inputs if use_fine else coarse_inputs)
        if use_fine and decision.reason == "deadline" and coarse_ok:
            # The model cannot finish in time (a huge prompt): the coarse step alone still can.
            decision = decide_rate(self.policy, coarse_inputs)
            use_fine = False
        p = "?" if pressure is None else f"{pressure:.2f}"
        if not decision.compress:
            extra = f" pressure={p}"
            if decision.reason in ("break_even", "deadline"):
                extra += f" saved_s={decision.saved_s:.3f} cost_s={decision.cost_s:.3f}"
            return self._replay_or_skip(req, seg, decision.reason, t0, seg.total_tokens, extra)
        remaining = deadline_s - (time.perf_counter() - t0)
        # The load curve's rate on the cache grid: requests at nearly the same load get the same bytes.
        rate = quantize_rate(decision.rate)
        out = await self.pipeline.compress(req.path, req.parsed, rate, remaining, seg, use_fine)
        if out.body is None:
            return self._skip(out.reason, t0, seg.total_tokens, f" pressure={p}")
        if out.reason != "compressed":  # nothing new compressed, but earlier turns replayed
            return self._replay_or_skip(req, seg, out.reason, t0, seg.total_tokens, f" pressure={p}")
        try:
            if big:
                body = await asyncio.to_thread(orjson.dumps, out.body)
            else:
                body = orjson.dumps(out.body)
        except (TypeError, orjson.JSONEncodeError):
            # Unpaired surrogates and the like: leave such a body exactly as the client sent it.
            return self._skip("encode", t0, seg.total_tokens)
        if len(body) >= len(req.body):
            return self._skip("no_gain", t0, seg.total_tokens)
        ms = (time.perf_counter() - t0) * 1000
        ratio = out.tokens_after / out.tokens_before if out.tokens_before else 1.0
        m = self.metrics
        m.requests.labels("compressed").inc()
        m.tokens_before.inc(out.tokens_before)
        m.tokens_after.inc(out.tokens_after)
        m.ratio.observe(ratio)
        m.seconds.labels("total").observe(ms / 1000)
        if out.coarse_s:
            m.seconds.labels("coarse").observe(out.coarse_s)
        if out.fine_s:
            m.seconds.labels("fine").observe(out.fine_s)
        m.docs_dropped.inc(out.docs_before - len(out.kept_docs))
        if out.coarse_decision:
            m.coarse_decisions.labels(out.coarse_decision).inc()
        achieved = out.comp_after / out.comp_before if out.comp_before else 1.0
        floor = "bound" if out.coarse_decision == "floor" else "not_bound"
        m.requested_rate.observe(rate)
        m.achieved_rate.labels(floor).observe(achieved)
        h = (f"tokens={out.tokens_before}->{out.tokens_after} ratio={ratio:.2f} ms={ms:.0f} rate={rate:.2f}"
             f" achieved={achieved:.2f} pressure={p}")
        if out.docs_before:
            h += f" docs={out.docs_before}->{len(out.kept_docs)}" + (f"+{len(out.cut_docs)}cut" if out.cut_docs else "")
        if out.replayed:
            h += f" replayed={out.replayed}"
            m.turns_replayed.inc(out.replayed)
        if out.coarse_decision:
            # "floor": the ranking was flat at the cut, so more documents were kept than the rate asks.
            h += f" coarse={out.coarse_decision}"
        if out.ranker:
            h += f" ranker={out.ranker}"
        h += f" fine={out.fine}"
        return Rewrite(body, {HEADER: h})

    async def close(self) -> None:
        if self.pipeline.ranker is not None:
            await self.pipeline.ranker.close()
        if self.pipeline.fine is not None:
            await self.pipeline.fine.close()


# ---- construction from config --------------------------------------------------------------------------------
def build_fine_compressor(settings: CompressionSettings) -> FineCompressor | None:
    """The model side's batching worker for `settings.model_path`, or None (coarse step only).
    Blocking while the model loads (seconds): called once at startup."""
    if not settings.model_path:
        return None
    kwargs = dict(
        quantize=settings.fine_quantize and settings.fine_device == "cpu",
        device=settings.fine_device,
        backend=settings.fine_backend,
        num_threads=settings.fine_threads,
    )
    # The model runtime (numpy, torch) is imported only when a model is configured: `aigrid serve` from a
    # plain `pip install aigrid` (no compress extra) routes without it (tests/house/test_release.py).
    if settings.fine_process:
        from extproc.gateway.compression.runtime.process import ProcessCompressor  # noqa: PLC0415

        return ProcessCompressor(settings.model_path, **kwargs)
    from extproc.gateway.compression.runtime.worker import BatchingCompressor  # noqa: PLC0415

    return BatchingCompressor.from_path(settings.model_path, **kwargs)


def build_ranker(settings: CompressionSettings) -> CoarseRanker | None:
    """The coarse ranker the gateway ships for these settings (None: no coarse step). The twin builds its
    compression arms' ranker here too, so both rank with the same code and settings."""
    if not settings.coarse:
        return None
    return CoarseRanker(
        settings.ranker, settings.embedding_model_path, settings.embedding_languages,
        vector_cache_documents=settings.embedding_cache_documents, vector_cache_floats=settings.embedding_cache_floats,
    )


def build_compression_rewriter(config: Any, registry: Any = None) -> CompressionRewriter:
    """From `config.compression` alone (GatewayConfig, or CompressionSettings directly). Pass the gateway's
    Prometheus registry to expose the compressor's metrics on /metrics."""
    settings: CompressionSettings = getattr(config, "compression", config)
    ranker = build_ranker(settings)
    if ranker is not None:
        ranker.start_loading()
    fine = build_fine_compressor(settings)
    return CompressionRewriter(settings, fine=fine, ranker=ranker, registry=registry)
