"""GPU and model profiles, and the roofline cost model built from them.

Everything here is plain data and pure arithmetic so that the engine and its tests can use it without an
event loop. The figures live in ``profiles.yaml`` beside this module, each with its public source; a
site can point at another YAML file with the same shape (``--profiles FILE``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

DEFAULT_PROFILES_PATH = Path(__file__).with_name("profiles.yaml")

GB = 1e9
MIB = float(1 << 20)


class ProfileError(ValueError):
    """A profile file is malformed, or a site asks for a configuration that cannot run."""


@dataclass(frozen=True)
class GPUProfile:
    key: str
    product: str
    memory_gb: float
    mem_bw_gb_s: float
    bf16_tflops: float
    link_gb_s: float  # one direction, per GPU, for tensor-parallel all-reduce traffic
    allreduce_latency_us: float
    fp8_tflops: float = 0.0  # dense FP8 tensor peak; 0 = no FP8 tensor cores (an FP8 model runs at bf16 rate)
    # Per-GPU efficiency, when calibration says the engine-wide figure does not fit this GPU (None = use
    # the engine's). docs/simulator.md lists the points each one was fitted on.
    mfu: float | None = None
    mem_efficiency: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * GB


@dataclass(frozen=True)
class ModelProfile:
    key: str
    served_name: str
    params: float
    embedding_params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    max_context: int
    min_gpus_hint: int = 1
    kv_dtype_bytes: int = 0  # KV cache element size; 0 = the weights' (vLLM's kv_cache_dtype "auto")
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def streamed_params(self) -> float:
        """Parameters every forward pass reads/multiplies: all but the input embedding (a lookup)."""
        return self.params - self.embedding_params

    @property
    def kv_bytes_per_token(self) -> int:
        # K and V, per layer, per KV head.
        return 2 * self.layers * self.kv_heads * self.head_dim * (self.kv_dtype_bytes or self.dtype_bytes)


@dataclass(frozen=True)
class EngineDefaults:
    mem_efficiency: float = 0.85
    mfu: float = 0.5
    step_overhead_ms: float = 1.0  # CPU/launch cost of a step with one sequence
    cpu_per_seq_us: float = 10.0  # CPU cost of each further sequence in the batch (scheduler, sampler, I/O)
    non_kv_reserve_gb: float = 1.5
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    # vLLM V1 turns automatic prefix caching on by default (--no-enable-prefix-caching turns it off).
    enable_prefix_caching: bool = True


@dataclass(frozen=True)
class Profiles:
    gpus: Mapping[str, GPUProfile]
    models: Mapping[str, ModelProfile]
    engine: EngineDefaults

    def gpu(self, name: str) -> GPUProfile:
        key = _lookup(self.gpus, name)
        if key is None:
            raise ProfileError(f"unknown GPU {name!r}; known: {', '.join(sorted(self.gpus))}")
        return self.gpus[key]

    def model(self, name: str) -> ModelProfile:
        key = _lookup(self.models, name)
        if key is None:
            for m in self.models.values():  # also accept the served (Hugging Face) name
                if m.served_name.lower() == name.lower():
                    return m
            raise ProfileError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}")
        return self.models[key]


def _lookup(table: Mapping[str, Any], name: str) -> str | None:
    for key in table:
        if key.lower() == name.lower():
            return key
    return None


def _numbers(cls: type, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce numeric fields: YAML 1.1 reads ``8.03e9`` (no sign in the exponent) as a string."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"expected a mapping, got {type(entry).__name__}")
    out = dict(entry)
    for f in fields(cls):
        if f.name in out and out[f.name] is not None and f.type in ("float", "int", "float | None"):
            out[f.name] = int(float(out[f.name])) if f.type == "int" else float(out[f.name])
    return out


def load_profiles(path: str | Path | None = None) -> Profiles:
    """Read a profiles YAML file (the packaged one by default). The result is immutable, so a file read
    once (same path, same modification time) is not parsed again: the twin builds sites on every run."""
    p = Path(path) if path else DEFAULT_PROFILES_PATH
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        stamp = -1
    return _load_profiles(str(p), stamp)


@functools.lru_cache(maxsize=16)
def _load_profiles(path: str, stamp: int) -> Profiles:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profiles file {p}: {exc}") from exc
    if not isinstance(raw, dict) or "gpus" not in raw or "models" not in raw:
        raise ProfileError(f"{p}: a profiles file needs top-level 'gpus' and 'models' mappings")
    try:
        gpus = {k: GPUProfile(key=k, **_numbers(GPUProfile, v)) for k, v in raw["gpus"].items()}
        models = {k: ModelProfile(key=k, **_numbers(ModelProfile, v)) for k, v in raw["models"].items()}
        engine = EngineDefaults(**_numbers(EngineDefaults, raw.get("engine") or {}))
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{p}: bad profile entry: {exc}") from exc
    return Profiles(gpus=gpus, models=models, engine=engine)


@dataclass(frozen=True)
class StepCost:
    """One step's time by operator, in seconds (see ``ReplicaHardware.step_cost``)."""

    linear: float
    attention: float
    comm: float
    cpu: float

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.comm + self.cpu


@dataclass(frozen=True)
class ReplicaHardware:
    """One model replica: ``tp`` GPUs of one kind running one model with tensor parallelism.

    Holds the derived quantities the engine needs (KV blocks, step times). ``speed_factor`` scales every
    rate (bandwidth, FLOP/s, link, fixed overheads) by the same factor, so a box that cannot keep up can
    simulate the same GPU ``1/speed_factor`` times slower with every ratio intact.
    """

    gpu: GPUProfile
    model: ModelProfile
    tp: int
    engine: EngineDefaults
    speed_factor: float = 1.0
    max_model_len: int = 0  # 0: derive (model max, capped by what the KV cache holds)

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ProfileError("gpus per replica must be >= 1")
        if not (0 < self.speed_factor <= 1000):
            raise ProfileError("speed factor must be in (0, 1000]")
        if self.kv_capacity_tokens < self.engine.block_size:
            need = self.model.weight_bytes / GB
            raise ProfileError(
                f"{self.model.key} ({need:.0f} GB of weights) does not fit {self.tp} x {self.gpu.key} "
                f"({self.gpu.memory_gb:g} GB each at gpu_memory_utilization "
                f"{self.engine.gpu_memory_utilization}); use more GPUs per replica"
            )
        if self.max_model_len and self.max_model_len > self.model.max_context:
            raise ProfileError(
                f"max_model_len {self.max_model_len} exceeds {self.model.key}'s context {self.model.max_context}"
            )
        if self.max_model_len and self.max_model_len > self.kv_capacity_tokens:
            # vLLM refuses to start in this case too.
            raise ProfileError(
                f"max_model_len {self.max_model_len} is larger than the KV cache can hold "
                f"({self.kv_capacity_tokens} tokens); lower it or add GPUs"
            )

    # ---- memory -------------------------------------------------------------------------------------
    @property
    def weight_bytes_per_gpu(self) -> float:
        return self.model.weight_bytes / self.tp

    @property
    def kv_bytes_per_token(self) -> int:
        """Whole-replica KV bytes per token (split evenly over the TP GPUs)."""
        return self.model.kv_bytes_per_token

    @property
    def kv_pool_bytes_per_gpu(self) -> float:
        budget = self.gpu.memory_bytes * self.engine.gpu_memory_utilization
        return max(0.0, budget - self.weight_bytes_per_gpu - self.engine.non_kv_reserve_gb * GB)

    @property
    def num_blocks(self) -> int:
        per_token_per_gpu = self.kv_bytes_per_token / self.tp
        tokens = self.kv_pool_bytes_per_gpu / per_token_per_gpu
        return int(tokens // self.engine.block_size)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.engine.block_size

    @property
    def effective_max_model_len(self) -> int:
        if self.max_model_len:
            return self.max_model_len
        return min(self.model.max_context, self.kv_capacity_tokens)

    @property
    def fb_used_bytes_per_gpu(self) -> float:
        """What nvidia-smi/DCGM shows: vLLM pre-allocates weights + KV pool + workspace at start-up."""
        return self.weight_bytes_per_gpu + self.kv_pool_bytes_per_gpu + self.engine.non_kv_reserve_gb * GB

    # ---- time ---------------------------------------------------------------------------------------
    def step_cost(self, num_tokens: int, kv_read_tokens: int, attn_ctx_sum: int, num_seqs: int = 1) -> "StepCost":
        """Seconds one engine step takes on this replica, per operator (Vidur's approach: a step's time
        is the sum of its operators' times, each from a roofline, plus the CPU's share).

        num_tokens: tokens computed this step (prefill chunk tokens + one per decoding sequence).
        kv_read_tokens: cached KV entries attention reads (sum of the scheduled sequences' contexts
            before this step) -- the decode-attention term: a decoding sequence reads its whole context.
        attn_ctx_sum: sum over computed tokens of the context each token attends to (attention FLOPs).
        num_seqs: sequences in the batch (the CPU's per-sequence work).

        * linear layers (QKV/O projections, MLP, LM head): stream the weights once per step and multiply
          every token: max(weight bytes / bandwidth, 2 x params x tokens / FLOP rate). FP8 weights use
          the GPU's FP8 tensor rate;
        * attention: read the cached KV of every scheduled sequence and write the new tokens' KV, and
          compute QK^T and AV: max(KV bytes / bandwidth, 4 x layers x heads x head_dim x attn_ctx_sum /
          bf16 FLOP rate) (attention runs in bf16 whatever the weights);
        * tensor-parallel all-reduces (tp > 1): two per layer;
        * CPU: ``step_overhead_ms`` for a batch of one plus ``cpu_per_seq_us`` for each further sequence.

        The kernels run one after another, so their times add (a chunked-prefill step pays its decode
        sequences' KV reads on top of its GEMMs, not hidden under them).
        """
        if num_tokens <= 0:
            return StepCost(0.0, 0.0, 0.0, 0.0)
        return StepCost(*self._terms(num_tokens, kv_read_tokens, attn_ctx_sum, num_seqs))

    @functools.cached_property
    def _rates(self) -> tuple[float, ...]:
        """Per-step constants of the cost model (computed once; the engine calls it every step)."""
        m, g, e = self.model, self.gpu, self.engine
        s = self.speed_factor
        bw = self.tp * g.mem_bw_gb_s * GB * (g.mem_efficiency or e.mem_efficiency) * s
        mfu = g.mfu or e.mfu
        bf16 = self.tp * g.bf16_tflops * 1e12 * mfu * s
        dense = self.tp * g.fp8_tflops * 1e12 * mfu * s if m.dtype_bytes == 1 and g.fp8_tflops else bf16
        weight_time = m.streamed_params * m.dtype_bytes / bw
        flops_per_token = 2.0 * m.streamed_params / dense
        kv_time_per_token = m.kv_bytes_per_token / bw
        attn_time_per_ctx = 4.0 * m.layers * m.heads * m.head_dim / bf16
        comm_fixed = comm_per_token = 0.0
        if self.tp > 1:
            # Two all-reduces per layer (after attention and after the MLP) of num_tokens x hidden
            # activations (bf16); ring all-reduce moves 2(tp-1)/tp of the message over each GPU's link.
            comm_fixed = 2 * m.layers * g.allreduce_latency_us * 1e-6 / s
            comm_per_token = 2 * m.layers * 2 * (self.tp - 1) / self.tp * m.hidden * 2 / (g.link_gb_s * GB) / s
        cpu_base = e.step_overhead_ms * 1e-3 / s
        cpu_per_seq = e.cpu_per_seq_us * 1e-6 / s
        return (weight_time, flops_per_token, kv_time_per_token, attn_time_per_ctx, comm_fixed, comm_per_token,
                cpu_base, cpu_per_seq)

    def _terms(self, num_tokens: int, kv_read_tokens: int, attn_ctx_sum: int, num_seqs: int) -> tuple[float, float, float, float]:
        w, fpt, kvt, apc, cf, cpt, cb, cps = self._rates
        t_linear = max(w, fpt * num_tokens)
        t_attn = max(kvt * (kv_read_tokens + num_tokens), apc * attn_ctx_sum)
        t_comm = cf + cpt * num_tokens if self.tp > 1 else 0.0
        t_cpu = cb + cps * (num_seqs - 1 if num_seqs > 1 else 0)
        return t_linear, t_attn, t_comm, t_cpu

    def decode_step_terms(self, batch: int) -> tuple[float, float, float, float, float]:
        """A decode-only step of ``batch`` sequences as the engine's stretches evaluate it, step after
        step: ``(t_linear, kv_time_per_token, attn_time_per_ctx, t_comm, t_cpu)``, so that with
        ``x = kv_read + batch``, ``t_linear + max(kv_time_per_token * x, attn_time_per_ctx * x) + t_comm +
        t_cpu`` is ``step_time(batch, kv_read, x, batch)`` (the same operations in the same order)."""
        w, fpt, kvt, apc, cf, cpt, cb, cps = self._rates
        t_linear = max(w, fpt * batch)
        t_comm = cf + cpt * batch if self.tp > 1 else 0.0
        t_cpu = cb + cps * (batch - 1 if batch > 1 else 0)
        return t_linear, kvt, apc, t_comm, t_cpu

    def step_time(self, num_tokens: int, kv_read_tokens: int, attn_ctx_sum: int, num_seqs: int = 1) -> float:
        """Seconds one engine step takes: the sum of :meth:`step_cost`'s terms."""
        if num_tokens <= 0:
            return 0.0
        a, b, c, d = self._terms(num_tokens, kv_read_tokens, attn_ctx_sum, num_seqs)
        return a + b + c + d

    def describe(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.key,
            "gpu_product": self.gpu.product,
            "model": self.model.key,
            "served_model_name": self.model.served_name,
            "gpus_per_replica": self.tp,
            "speed_factor": self.speed_factor,
            "weights_gb_per_gpu": round(self.weight_bytes_per_gpu / GB, 3),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "num_gpu_blocks": self.num_blocks,
            "block_size": self.engine.block_size,
            "max_model_len": self.effective_max_model_len,
            "max_num_seqs": self.engine.max_num_seqs,
            "max_num_batched_tokens": self.engine.max_num_batched_tokens,
            "decode_step_ms_batch1": round(1e3 * self.step_time(1, 1024, 1024), 3),
        }


def make_hardware(
    profiles: Profiles,
    gpu: str,
    model: str,
    tp: int = 1,
    *,
    speed_factor: float = 1.0,
    max_model_len: int = 0,
    **engine_overrides: Any,
) -> ReplicaHardware:
    """Build a replica from profile names; engine_overrides replace fields of the engine defaults."""
    overrides = {k: v for k, v in engine_overrides.items() if v is not None}
    eng = replace(profiles.engine, **overrides) if overrides else profiles.engine
    return ReplicaHardware(
        gpu=profiles.gpu(gpu),
        model=profiles.model(model),
        tp=tp,
        engine=eng,
        speed_factor=speed_factor,
        max_model_len=max_model_len,
    )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "DEFAULT_PROFILES_PATH",
    "EngineDefaults",
    "GPUProfile",
    "ModelProfile",
    "ProfileError",
    "Profiles",
    "ReplicaHardware",
    "StepCost",
    "ceil_div",
    "load_profiles",
    "make_hardware",
]
