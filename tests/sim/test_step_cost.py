"""The step cost by operator: decode attention, batch-dependent CPU, FP8 GEMMs, per-GPU efficiency."""

from __future__ import annotations

import pytest

from extproc.tools.sim.profiles import GB, load_profiles, make_hardware

PROFILES = load_profiles()


def test_decode_attention_reads_every_running_sequences_kv() -> None:
    h = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    bw = h.gpu.mem_bw_gb_s * GB * h.engine.mem_efficiency
    a = h.step_cost(64, 64 * 1000, 64 * 1000, 64)
    b = h.step_cost(64, 64 * 2000, 64 * 2000, 64)
    # Doubling every context adds exactly its KV bytes at the bandwidth; the GEMMs do not change.
    assert b.attention - a.attention == pytest.approx(64 * 1000 * h.kv_bytes_per_token / bw, rel=1e-9)
    assert a.linear == b.linear and a.cpu == b.cpu
    # At batch 64 x 2000 tokens the KV read outweighs the weights (16 GB vs 15 GB).
    assert b.attention > b.linear


def test_cpu_overhead_grows_with_the_batch_and_keeps_the_batch_one_cost() -> None:
    h = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    e = h.engine
    assert h.step_cost(1, 100, 100, 1).cpu == pytest.approx(e.step_overhead_ms / 1e3)
    assert h.step_cost(1, 100, 100).cpu == h.step_cost(1, 100, 100, 1).cpu  # 3-argument calls unchanged
    assert h.step_cost(256, 0, 256, 256).cpu == pytest.approx(e.step_overhead_ms / 1e3 + 255 * e.cpu_per_seq_us / 1e6)
    assert h.step_time(256, 0, 256, 256) == pytest.approx(h.step_cost(256, 0, 256, 256).total)


def test_a_mixed_step_pays_decode_reads_on_top_of_the_prefill_gemms() -> None:
    h = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    bw = h.gpu.mem_bw_gb_s * GB * h.engine.mem_efficiency
    prefill = h.step_cost(4096, 0, 4096 * 2048, 1)
    mixed = h.step_cost(4096 + 100, 100 * 3000, 4096 * 2048 + 100 * 3000, 101)
    decode_reads = 100 * 3000 * h.kv_bytes_per_token / bw
    # The GEMMs are compute-bound; the decode sequences' KV reads are a separate kernel's time, not
    # hidden under them (the old single roofline max(memory, compute) hid them).
    assert mixed.linear == pytest.approx(prefill.linear * 4196 / 4096)  # 100 more tokens through the GEMMs
    assert mixed.total >= prefill.linear + decode_reads
    assert mixed.attention == pytest.approx(max((100 * 3000 + 4196) * h.kv_bytes_per_token / bw,
                                                4.0 * 32 * 32 * 128 * (4096 * 2048 + 100 * 3000) / (989.4e12 * 0.5)))


def test_fp8_weights_use_the_fp8_rate_and_half_the_weight_bytes() -> None:
    bf16 = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    fp8 = make_hardware(PROFILES, "H100", "llama-3.1-8b-fp8", 1)
    # Compute-bound prefill: twice the dense rate; memory-bound decode: half the weight bytes.
    assert bf16.step_cost(8192, 0, 8192).linear == pytest.approx(2 * fp8.step_cost(8192, 0, 8192).linear, rel=1e-4)
    assert bf16.step_cost(1, 0, 1).linear == pytest.approx(2 * fp8.step_cost(1, 0, 1).linear, rel=1e-9)
    assert fp8.kv_bytes_per_token == bf16.kv_bytes_per_token  # KV stays bf16
    # A GPU without FP8 tensor cores runs FP8 weights at its bf16 rate.
    a100 = make_hardware(PROFILES, "A100", "llama-3.1-8b-fp8", 1)
    a100_bf16 = make_hardware(PROFILES, "A100", "llama-3.1-8b", 1)
    assert a100.step_cost(8192, 0, 8192).linear == pytest.approx(a100_bf16.step_cost(8192, 0, 8192).linear)


def test_a_per_gpu_efficiency_overrides_the_engine_figure() -> None:
    l40s = make_hardware(PROFILES, "L40S", "llama-3.1-8b", 1)
    assert l40s.gpu.mfu is not None and l40s.gpu.mfu != l40s.engine.mfu
    flops = 2.0 * l40s.model.streamed_params * 8192
    assert l40s.step_cost(8192, 0, 8192).linear == pytest.approx(flops / (l40s.gpu.bf16_tflops * 1e12 * l40s.gpu.mfu))


@pytest.mark.parametrize("gpu,tp", [("H100", 1), ("L40S", 1), ("H100", 2), ("L4", 1)])
def test_decode_step_terms_give_step_time_bit_for_bit(gpu: str, tp: int) -> None:
    """The engine's stretches sum decode steps from these terms: equal floats, not approximately."""
    h = make_hardware(PROFILES, gpu, "llama-3.1-8b", tp)
    for b in (1, 2, 7, 64, 255, 1024):
        t_linear, kvt, apc, t_comm, t_cpu = h.decode_step_terms(b)
        for kv_read in (0, 1, 999, 123_457, 3_000_000):
            x = kv_read + b
            assert t_linear + max(kvt * x, apc * x) + t_comm + t_cpu == h.step_time(b, kv_read, x, b)
