"""Profiles and the roofline cost model: figures, sources, derived capacities, scaling laws."""

from __future__ import annotations

import pytest

from extproc.tools.sim.profiles import GB, ProfileError, load_profiles, make_hardware

PROFILES = load_profiles()
NUMERIC_GPU = ("memory_gb", "mem_bw_gb_s", "bf16_tflops", "link_gb_s", "allreduce_latency_us")
NUMERIC_MODEL = ("params", "embedding_params", "layers", "hidden", "heads", "kv_heads", "head_dim", "dtype_bytes", "max_context")


def test_required_profiles_present() -> None:
    assert {"H100", "H200", "A100", "L40S", "L4"} <= set(PROFILES.gpus)
    assert {"llama-3.1-8b", "qwen2.5-7b", "llama-3.1-70b"} <= set(PROFILES.models)


@pytest.mark.parametrize("key", sorted(PROFILES.gpus))
def test_every_gpu_figure_has_a_source(key: str) -> None:
    g = PROFILES.gpus[key]
    for f in NUMERIC_GPU:
        assert getattr(g, f) > 0
        assert g.sources.get(f), f"{key}.{f} has no source"


@pytest.mark.parametrize("key", sorted(PROFILES.models))
def test_every_model_figure_has_a_source(key: str) -> None:
    m = PROFILES.models[key]
    for f in NUMERIC_MODEL:
        assert getattr(m, f) > 0
        assert m.sources.get(f), f"{key}.{f} has no source"
    assert m.heads * m.head_dim == m.hidden


def test_llama8b_kv_bytes_per_token_is_128_kib() -> None:
    # 32 layers x 8 KV heads x 128 dims x 2 (K,V) x 2 bytes
    assert PROFILES.model("llama-3.1-8b").kv_bytes_per_token == 128 * 1024
    assert PROFILES.model("llama-3.1-70b").kv_bytes_per_token == 320 * 1024


def test_kv_capacity_formula() -> None:
    hw = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    e = hw.engine
    expected_tokens = (80 * GB * e.gpu_memory_utilization - 8.03e9 * 2 - e.non_kv_reserve_gb * GB) / (128 * 1024)
    assert hw.kv_capacity_tokens == int(expected_tokens // e.block_size) * e.block_size
    assert hw.kv_capacity_tokens % e.block_size == 0


def test_tensor_parallel_splits_weights_and_multiplies_kv() -> None:
    with pytest.raises(ProfileError):
        make_hardware(PROFILES, "H100", "llama-3.1-70b", 1)  # 141 GB of weights on one 80 GB GPU
    tp4 = make_hardware(PROFILES, "H100", "llama-3.1-70b", 4)
    tp8 = make_hardware(PROFILES, "H100", "llama-3.1-70b", 8)
    assert tp8.kv_capacity_tokens > 2 * tp4.kv_capacity_tokens  # weights share shrinks too
    # More GPUs: a faster decode step (bandwidth adds up), never slower.
    assert tp8.step_time(1, 1000, 1000) < tp4.step_time(1, 1000, 1000)


def test_lookup_by_served_name_and_case() -> None:
    assert PROFILES.model("meta-llama/Llama-3.1-8B-Instruct").key == "llama-3.1-8b"
    assert PROFILES.gpu("h100").key == "H100"
    with pytest.raises(ProfileError):
        PROFILES.gpu("TPU")


def test_decode_is_memory_bound_and_follows_bandwidth() -> None:
    h100 = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    h200 = make_hardware(PROFILES, "H200", "llama-3.1-8b", 1)
    overhead = h100.engine.step_overhead_ms / 1000
    r = (h100.step_time(1, 512, 512) - overhead) / (h200.step_time(1, 512, 512) - overhead)
    assert r == pytest.approx(4800 / 3350, rel=1e-9)  # same FLOP/s, only bandwidth differs
    # Batch 1 decode: reading the weights dominates, so 8 sequences cost far less than 8x.
    assert h100.step_time(8, 8 * 512, 8 * 512) < 1.2 * h100.step_time(1, 512, 512)


def test_prefill_is_compute_bound_and_linear() -> None:
    hw = make_hardware(PROFILES, "H100", "llama-3.1-8b", 1)
    t4k = hw.step_time(4096, 0, 4096)  # attention term small for short context
    t8k = hw.step_time(8192, 0, 8192)
    overhead = hw.engine.step_overhead_ms / 1000
    assert (t8k - overhead) / (t4k - overhead) == pytest.approx(2.0, rel=1e-6)


def test_speed_factor_scales_every_duration() -> None:
    a = make_hardware(PROFILES, "L40S", "llama-3.1-70b", 4)
    b = make_hardware(PROFILES, "L40S", "llama-3.1-70b", 4, speed_factor=0.25)
    for args in ((1, 100, 100), (64, 64 * 900, 64 * 900), (2048, 0, 2048 * 1024)):
        assert b.step_time(*args) == pytest.approx(4 * a.step_time(*args), rel=1e-9)
    assert a.kv_capacity_tokens == b.kv_capacity_tokens  # memory is not a rate


def test_max_model_len_validation() -> None:
    with pytest.raises(ProfileError):
        make_hardware(PROFILES, "L4", "llama-3.1-8b", 1, max_model_len=131072)  # KV holds ~30k
    hw = make_hardware(PROFILES, "L4", "llama-3.1-8b", 1)
    assert hw.effective_max_model_len == hw.kv_capacity_tokens  # capped, like a sized vLLM deploy
