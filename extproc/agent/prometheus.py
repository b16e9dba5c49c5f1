"""Inference-server metrics (vLLM, SGLang) in Prometheus text format → one engine sample. Pure.

Parsing goes through prometheus-client's own text parser, never a regex. A scrape is used whole or not at
all: any value that no engine can produce (NaN, negative, absurdly large, a KV fraction above 1) rejects
the whole scrape with a reason, so a confused endpoint turns into a *stale* source (the node then reads as
unknown or unhealthy) instead of an idle-looking one. Absence is not zero: an endpoint whose text lacks
the engine's request gauges is rejected too.

Metric names (checked against the servers' own sources and docs):
- vLLM (vllm/v1/metrics/loggers.py; docs "Production Metrics"): `vllm:num_requests_running`,
  `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` (0..1); older releases (v0.x, V0 engine) name
  the KV gauge `vllm:gpu_cache_usage_perc`. Series carry `engine` (data-parallel rank) and `model_name`.
- SGLang (python/sglang/srt/metrics/collector.py; docs/references/production_metrics.md):
  `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage` (KV tokens used, 0..1),
  `sglang:max_running_requests` (capacity hint, when exported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from extproc.wire.promtext import PromTextError, read_samples

# Far above any honest /metrics page (a busy vLLM page is ~100 KiB), small enough to bound memory.
MAX_TEXT_BYTES = 4 * 1024 * 1024
# Same bound as the report codec: larger counts are corrupt, not load.
MAX_REQUESTS = 10_000_000
# Float noise: a KV fraction printed as 1.0000000002 is full, not invalid.
_FRACTION_SLACK = 1e-6


class MetricsRejected(ValueError):
    """The text is not a usable metrics page for this source; the message says why."""


class EngineFlavour(str, Enum):
    vllm = "vllm"
    sglang = "sglang"


@dataclass(frozen=True, slots=True)
class EngineNames:
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    # In order of preference: the first name present wins (vLLM exports both during the deprecation).
    kv_usage: tuple[str, ...]
    max_running: tuple[str, ...] = ()

    @property
    def all(self) -> frozenset[str]:
        return frozenset(self.running + self.waiting + self.kv_usage + self.max_running)


ENGINE_NAMES: dict[EngineFlavour, EngineNames] = {
    EngineFlavour.vllm: EngineNames(
        running=("vllm:num_requests_running",),
        waiting=("vllm:num_requests_waiting",),
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    EngineFlavour.sglang: EngineNames(
        running=("sglang:num_running_reqs",),
        waiting=("sglang:num_queue_reqs",),
        kv_usage=("sglang:token_usage",),
        max_running=("sglang:max_running_requests",),
    ),
}


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One inference-server endpoint's view, summed over its series (data-parallel engines, models)."""

    requests_running: int
    requests_waiting: int
    # Worst series' KV usage 0..1; None when the endpoint does not export it.
    kv_cache_usage: float | None
    # Capacity hint (max concurrent sequences); 0 = unknown.
    max_running: int = 0
    # Model ids from the endpoint's /v1/models (polled less often than metrics); empty = not known.
    models: tuple[str, ...] = ()


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_samples(text: str, wanted: Iterable[str]) -> Samples:
    """The samples of the wanted metric names, keyed by sample name. Raises MetricsRejected.

    The text format ends every line, the last included, with a newline: text that does not is a cut-off
    response (a value cut from "12.5" to "1" would otherwise parse as a plausible wrong number).
    """
    if len(text) > MAX_TEXT_BYTES:
        raise MetricsRejected(f"metrics text of {len(text)} bytes exceeds {MAX_TEXT_BYTES}")
    if not text.strip():
        raise MetricsRejected("empty metrics text")
    if not text.endswith("\n"):
        raise MetricsRejected("metrics text does not end with a newline (truncated response)")
    out: Samples = {}
    try:
        for name, labels, value in read_samples(text, frozenset(wanted)):
            out.setdefault(name, []).append((labels, value))
    except PromTextError as exc:
        raise MetricsRejected(str(exc)) from None
    return out


def _values(samples: Samples, names: tuple[str, ...]) -> tuple[str, list[float]] | None:
    for n in names:
        if n in samples:
            return n, [v for _, v in samples[n]]
    return None


def _count(name: str, values: list[float]) -> int:
    total = 0.0
    for v in values:
        if not math.isfinite(v) or v < 0 or v > MAX_REQUESTS:
            raise MetricsRejected(f"{name}={v!r} is not a request count")
        total += v
    if total > MAX_REQUESTS:
        raise MetricsRejected(f"{name} sums to {total!r}, more than {MAX_REQUESTS}")
    return int(round(total))


def parse_engine(text: str, flavour: EngineFlavour) -> EngineSample:
    """An engine endpoint's metrics page → EngineSample. Raises MetricsRejected with a reason."""
    names = ENGINE_NAMES[flavour]
    samples = parse_samples(text, names.all)
    running = _values(samples, names.running)
    waiting = _values(samples, names.waiting)
    if running is None or waiting is None:
        missing = names.running[0] if running is None else names.waiting[0]
        raise MetricsRejected(f"no {missing} in the metrics (not a {flavour.value} endpoint, or not ready)")
    kv: float | None = None
    kv_found = _values(samples, names.kv_usage)
    if kv_found is not None:
        kv_name, kv_values = kv_found
        for v in kv_values:
            if not math.isfinite(v) or v < 0 or v > 1 + _FRACTION_SLACK:
                raise MetricsRejected(f"{kv_name}={v!r} is not a fraction in [0, 1]")
        # The worst series: one full data-parallel engine queues whatever its siblings do.
        kv = min(1.0, max(kv_values)) if kv_values else None
    max_running = 0
    mr = _values(samples, names.max_running)
    if mr is not None:
        max_running = _count(mr[0], mr[1])
    return EngineSample(
        requests_running=_count(running[0], running[1]),
        requests_waiting=_count(waiting[0], waiting[1]),
        kv_cache_usage=kv,
        max_running=max_running,
    )
