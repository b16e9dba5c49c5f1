"""Plain-Python counters and histograms for the engine.

The engine observes hundreds of inter-token latencies per step; ``prometheus_client`` takes a lock per
observation, so the hot path uses these lock-free structures (one event loop owns them) and the
``/metrics`` collector converts them into Prometheus families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Sequence

# Bucket boundaries as vLLM's own metrics use them (vllm/v1/metrics/loggers.py), so dashboards and
# agents written for vLLM read the simulator unchanged.
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
E2E_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)
# The simulator's own timing error: how late a step's results were released versus the modelled time.
LATENESS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)


class Hist:
    """A fixed-bucket histogram with Prometheus ``le`` semantics and weighted observations."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts: list[int] = [0] * (len(self.bounds) + 1)  # last slot is +Inf
        self.sum: float = 0.0
        self.count: int = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        acc = 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append((repr(float(b)), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out

    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0


@dataclass
class EngineStats:
    """Cumulative counters of one replica, in the units vLLM reports."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    steps: int = 0
    busy_seconds: float = 0.0  # modelled GPU-busy time (sum of step durations)
    # Prefix cache, in tokens (vLLM's vllm:prefix_cache_queries / vllm:prefix_cache_hits): prompt tokens
    # looked up at admission, and how many of them were found cached.
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    finished: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})
    ttft: Hist = field(default_factory=lambda: Hist(TTFT_BUCKETS))
    itl: Hist = field(default_factory=lambda: Hist(ITL_BUCKETS))
    e2e: Hist = field(default_factory=lambda: Hist(E2E_BUCKETS))
    queue: Hist = field(default_factory=lambda: Hist(E2E_BUCKETS))


def timing_summary(
    lateness: Sequence[float], slip_seconds: float, *, lateness_p99_bound_s: float, max_slip_s: float
) -> dict[str, Any]:
    """The simulator's timing error and its verdict. PURE.

    A run is ``valid`` only if the simulator kept real time: step lateness p99 within the bound and no
    more clock slip than allowed. Past either, the figures measured against this site describe the
    host's CPU, not the modelled GPU; ``reason`` says which bound broke.
    """
    samples = sorted(lateness)
    n = len(samples)

    def q(p: float) -> float:
        return samples[min(n - 1, int(p * n))] if n else 0.0

    p99 = q(0.99)
    reasons = []
    if p99 > lateness_p99_bound_s:
        reasons.append(f"lateness p99 {p99 * 1e3:.1f} ms > bound {lateness_p99_bound_s * 1e3:.1f} ms")
    if slip_seconds > max_slip_s:
        reasons.append(f"clock slip {slip_seconds:.3f} s > bound {max_slip_s:.3f} s")
    return {
        "steps": n,
        "lateness_mean_s": sum(samples) / n if n else 0.0,
        "lateness_p50_s": q(0.50),
        "lateness_p90_s": q(0.90),
        "lateness_p99_s": p99,
        "lateness_max_s": samples[-1] if n else 0.0,
        "slip_seconds": slip_seconds,
        "lateness_p99_bound_s": lateness_p99_bound_s,
        "max_slip_s": max_slip_s,
        "valid": not reasons,
        "reason": "; ".join(reasons),
    }
