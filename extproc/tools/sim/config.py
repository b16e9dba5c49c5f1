"""One simulated site's configuration: what ``aigrid sim`` flags and sites files set. Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SimSiteConfig:
    """One simulated site: a GPU profile x GPUs per replica x replicas, behind one HTTP port."""

    name: str = "sim"
    gpu: str = "H100"
    model: str = "llama-3.1-8b"
    gpus_per_replica: int = 1
    replicas: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    link_delay_ms: float = 0.0  # one way: applied to request arrival and again to the response stream
    link_jitter_ms: float = 0.0  # uniform in [-jitter, +jitter] around the delay, like netem's default
    speed_factor: float = 1.0
    # Time dilation: every engine step takes k x its modelled time (the GPU runs k x slower), so that a
    # small host can drive the stack to a grid's knee at a few requests per second. Unlike speed_factor
    # it leaves the link alone: link_delay_ms is wall-clock time as given (a dilated grid passes its
    # link x k itself, `extproc/tools/twin/dilation.py`). The lateness check is in wall time as before.
    time_dilation: float = 1.0
    profiles: str | None = None
    served_model_name: str | None = None
    max_model_len: int = 0
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    # vLLM V1's automatic prefix caching; None = the profile's default (on, as in vLLM).
    prefix_caching: bool | None = None
    # Output length when the request does not force it: a natural EOS drawn uniformly from this range
    # (from the request's seed when it has one, else deterministic per site and request order),
    # capped by max_tokens.
    natural_output_min: int = 128
    natural_output_max: int = 512
    ignore_eos: bool = False  # always generate exactly max_tokens (like vLLM's ignore_eos)
    seed: int = 0
    slip_threshold_ms: float = 100.0
    # A run is valid only while the simulator kept time: step lateness p99 within this bound and no
    # clock slip beyond max_slip_s (GET /sim/timing reports the verdict).
    lateness_p99_bound_ms: float = 20.0
    max_slip_s: float = 0.0
    # Send streamed tokens in groups of this many (first and last token always go at once), like
    # vLLM's --stream-interval. 1 = one SSE event per token per step, as vLLM does by default; larger
    # values cut the per-token socket writes when hundreds of streams share a small CPU.
    stream_interval: int = 1
    # Keep the last N request bodies (with their x-aigrid-* / x-request-id headers) for evaluation at
    # GET /_aigrid/records (DELETE clears): how the load test sees a prompt after the gateway rewrote it.
    # 0 = off. Bounded, so a long run cannot grow memory.
    record_prompts: int = 0

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> "SimSiteConfig":
        known = {f for f in cls.__dataclass_fields__}
        norm = {k.replace("-", "_"): v for k, v in m.items()}
        unknown = set(norm) - known
        if unknown:
            raise ValueError(f"unknown site option(s): {', '.join(sorted(unknown))}")
        return cls(**norm)

    def validate(self) -> None:
        """Refuse a configuration that cannot run, naming the option."""
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if self.stream_interval < 1:
            raise ValueError("stream_interval must be >= 1")
        if self.natural_output_min < 1 or self.natural_output_max < self.natural_output_min:
            raise ValueError("natural output range must satisfy 1 <= min <= max")
        if self.lateness_p99_bound_ms <= 0:
            raise ValueError("lateness_p99_bound_ms must be > 0")
        if not 1.0 <= self.time_dilation <= 1000.0:
            raise ValueError("time_dilation must be in [1, 1000]")
        if self.max_slip_s < 0:
            raise ValueError("max_slip_s must be >= 0")
