"""Keep-rate control: how hard to compress one request, or whether to at all. Pure.

Two rules, both on plain numbers:

1. Load curve. When the router predicted this request's SLO slack at the chosen site (cost-model
   profiles: the share of the SLO its predicted TTFT/TPOT leave), the curve reads p = 1 - slack: a request
   predicted to fit with room is left alone, one predicted to miss is compressed down to the floor, which
   is where compressing turns a miss into a hit or relieves a stressed site. Otherwise the chosen site's
   pressure p (0 idle, 1 at capacity; see routing/views.py) sets the
   keep-rate: at or below `start_pressure` nothing is compressed (rate 1.0); between `start_pressure` and
   `full_pressure` the rate falls linearly; at and above `full_pressure` it is the floor. The floor is the
   more conservative of the SLA class's and the model's (a model known to suffer from compression can be
   given a higher floor). Unknown load means no compression: we do not spend CPU on a guess.

2. Break-even. Compression costs CPU time before the request leaves (tokens / compressor tokens per second,
   measured by the worker) and saves GPU time at the site: the prefill of the tokens removed, at the
   site's prefill speed, once for this request and once more for every request queued behind it (each
   waits that much less). The queue length is the site's `requests_waiting` when reported, else the
   M/M/1 mean queue length p²/(1-p). Compress only when saved > margin × cost, and only when the cost
   fits the deadline (else the worker would give up anyway, after spending the CPU).

   On a CPU compressor (~1-2k tokens/s) against a GPU that prefills ~10k tokens/s, this says "skip" until
   the site queues: that is the published finding (compression pays only above a break-even load), and
   the reason the rule exists.

   Net of the prefix cache. A token the site serves from its prefix cache costs no prefill, so removing
   it saves nothing, and rewriting it costs the hit: the rewritten text must be prefilled. The gateway
   never rewrites the conversation's earlier turns (segment.py) and sends the same bytes for the same
   content (cache.py), so normally no compressible token is in the cached prefix; when some are
   (`cached_compressible_tokens`), the saving counts only the others, minus the prefill of the cached
   ones' rewritten form. Tokens whose compression is already in the document cache cost the compressor
   nothing (`precomputed_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Cap on p in the M/M/1 queue estimate: the formula diverges at 1, and a site above capacity is spilling.
MAX_RHO = 0.95


@dataclass(frozen=True, slots=True)
class RatePolicy:
    start_pressure: float = 0.3
    full_pressure: float = 0.9
    # Lowest keep-rate per SLA class; realtime keeps most (its latency budget is smallest).
    floors: Mapping[str, float] = field(
        default_factory=lambda: {"realtime": 0.8, "standard": 0.5, "batch": 0.33}
    )
    default_floor: float = 0.5
    model_floors: Mapping[str, float] = field(default_factory=dict)
    # Operator override: compress every eligible request at this rate, whatever the load.
    fixed_rate: float | None = None
    min_compressible_tokens: int = 1024
    break_even: bool = True
    margin: float = 1.0
    # Prior for the compressor's speed until the worker has measured it.
    compressor_tokens_per_s: float = 1500.0


@dataclass(frozen=True, slots=True)
class RateInputs:
    compressible_tokens: int
    sla: str
    model: str | None
    pressure: float | None
    requests_waiting: int | None
    # The chosen site's prefill speed (tokens/s).
    prefill_tokens_per_s: float
    # Measured compressor speed (None before the first measurement).
    compressor_tokens_per_s: float | None
    deadline_s: float
    # Tokens the compressor must read, when not all compressible ones (a coarse-only pass reads a capped
    # prefix of each document).
    cost_tokens: int | None = None
    # Compressible tokens already compressed before (document cache): no compressor time.
    precomputed_tokens: int = 0
    # Compressible tokens inside the prefix the site has cached (0 under the newest-turn rule).
    cached_compressible_tokens: int = 0
    # The router's predicted SLO slack for this request at the chosen site (None: no prediction).
    slack: float | None = None


@dataclass(frozen=True, slots=True)
class RateDecision:
    rate: float
    # "compress", or why not: short, unknown_load, idle, deadline, break_even.
    reason: str
    saved_s: float = 0.0
    cost_s: float = 0.0

    @property
    def compress(self) -> bool:
        return self.reason == "compress" and self.rate < 1.0


def floor_for(policy: RatePolicy, sla: str, model: str | None) -> float:
    f = policy.floors.get(sla, policy.default_floor)
    if model is not None and model in policy.model_floors:
        f = max(f, policy.model_floors[model])
    return min(1.0, max(0.0, f))


def load_rate(pressure: float, start: float, full: float, floor: float) -> float:
    """1.0 at or below `start`, `floor` at or above `full`, linear between."""
    if pressure <= start:
        return 1.0
    if pressure >= full or full <= start:
        return floor
    frac = (pressure - start) / (full - start)
    return 1.0 - frac * (1.0 - floor)


def queue_length(pressure: float | None, requests_waiting: int | None) -> float:
    if requests_waiting is not None:
        return float(max(0, requests_waiting))
    if pressure is None or pressure <= 0:
        return 0.0
    rho = min(pressure, MAX_RHO)
    return rho * rho / (1.0 - rho)


def gpu_seconds_saved(tokens: int, rate: float, prefill_tps: float, queue_len: float) -> float:
    if prefill_tps <= 0:
        return 0.0
    prefill_s = tokens * (1.0 - rate) / prefill_tps
    return prefill_s * (1.0 + queue_len)


def compression_cost_s(tokens: int, compressor_tps: float) -> float:
    if compressor_tps <= 0:
        return float("inf")
    return tokens / compressor_tps


def net_gpu_seconds_saved(
    tokens: int, cached: int, rate: float, prefill_tps: float, queue_len: float
) -> float:
    """GPU seconds saved net of the prefix cache: only uncached tokens cost prefill, so only removing them
    saves; rewriting cached ones turns their hit into a prefill of what is left of them."""
    cached = min(max(0, cached), tokens)
    saved = gpu_seconds_saved(tokens - cached, rate, prefill_tps, queue_len)
    lost = (cached * rate / prefill_tps) * (1.0 + queue_len) if prefill_tps > 0 else 0.0
    return saved - lost


def decide_rate(policy: RatePolicy, x: RateInputs) -> RateDecision:
    if x.compressible_tokens < policy.min_compressible_tokens:
        return RateDecision(1.0, "short")
    if policy.fixed_rate is not None:
        rate = policy.fixed_rate
    elif x.slack is not None:
        rate = load_rate(
            1.0 - x.slack, policy.start_pressure, policy.full_pressure, floor_for(policy, x.sla, x.model)
        )
    else:
        if x.pressure is None:
            return RateDecision(1.0, "unknown_load")
        rate = load_rate(
            x.pressure, policy.start_pressure, policy.full_pressure, floor_for(policy, x.sla, x.model)
        )
    if rate >= 1.0:
        return RateDecision(1.0, "idle")
    tps = x.compressor_tokens_per_s or policy.compressor_tokens_per_s
    work = x.compressible_tokens if x.cost_tokens is None else x.cost_tokens
    cost = compression_cost_s(max(0, work - x.precomputed_tokens), tps)
    saved = net_gpu_seconds_saved(
        x.compressible_tokens, x.cached_compressible_tokens, rate, x.prefill_tokens_per_s,
        queue_length(x.pressure, x.requests_waiting),
    )
    if cost > x.deadline_s:
        return RateDecision(1.0, "deadline", saved, cost)
    if policy.break_even and saved <= policy.margin * cost:
        return RateDecision(1.0, "break_even", saved, cost)
    return RateDecision(rate, "compress", saved, cost)
