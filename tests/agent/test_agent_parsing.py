"""Pure parsing: vLLM / SGLang / DCGM pages in, samples or a reason out. Never any other exception."""

from __future__ import annotations

import math

import pytest
from agent_helpers import data
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.agent.dcgm import parse_dcgm
from extproc.agent.prometheus import EngineFlavour, EngineSample, MetricsRejected, parse_engine

VLLM = EngineFlavour.vllm
SGLANG = EngineFlavour.sglang


def test_vllm_v1_page() -> None:
    assert parse_engine(data("vllm_v0_10.txt"), VLLM) == EngineSample(7, 3, 0.4213, 0)


def test_vllm_v0_page_uses_the_older_kv_gauge() -> None:
    assert parse_engine(data("vllm_v0_6.txt"), VLLM) == EngineSample(31, 12, 0.9871, 0)


def test_sglang_page() -> None:
    assert parse_engine(data("sglang.txt"), SGLANG) == EngineSample(162, 2826, 0.28, 0)


def test_data_parallel_engines_sum_requests_and_take_worst_kv() -> None:
    text = (
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 5.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 0.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.9\n'
    )
    assert parse_engine(text, VLLM) == EngineSample(8, 1, 0.9, 0)


def test_new_kv_name_preferred_over_deprecated() -> None:
    text = (
        "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n"
        "vllm:gpu_cache_usage_perc 0.1\nvllm:kv_cache_usage_perc 0.7\n"
    )
    assert parse_engine(text, VLLM).kv_cache_usage == 0.7


def test_dcgm_page() -> None:
    g0, g1 = parse_dcgm(data("dcgm_h100.txt"))
    assert (g0.index, g0.uuid, g0.name) == (0, "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52", "NVIDIA H100 80GB HBM3")
    assert g0.utilization == pytest.approx(0.93) and g1.utilization == pytest.approx(0.12)
    mib = 1024 * 1024
    assert g0.memory_used_bytes == 76134 * mib
    # total = used + free + reserved when the exporter has no FB_TOTAL
    assert g0.memory_total_bytes == (76134 + 4871 + 554) * mib
    assert g0.power_watts == pytest.approx(512.337) and g0.temperature_c == 47


def test_dcgm_blank_sentinel_is_not_available_not_huge() -> None:
    text = 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} 40\nDCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 9223372036854775794\n'
    (g,) = parse_dcgm(text)
    assert g.temperature_c is None and g.utilization == pytest.approx(0.4)


BAD_ENGINE = {
    "garbage": "<html><body>502 Bad Gateway</body></html>\n",
    "truncated mid-line": data("vllm_v0_10.txt")[:1500],
    "truncated mid-label": 'vllm:num_requests_running{engine="0",mod\n',
    "empty": "",
    "NaN running": "vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\n",
    "negative waiting": "vllm:num_requests_running 1\nvllm:num_requests_waiting -4\n",
    "huge running": "vllm:num_requests_running 1e300\nvllm:num_requests_waiting 0\n",
    "inf kv": "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc +Inf\n",
    "kv above 1": "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 1.7\n",
    "unknown names only": "my_app_requests_total 12\nprocess_cpu_seconds_total 3.5\n",
    "sglang page on a vllm source": data("sglang.txt"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENGINE))
def test_bad_engine_pages_are_rejected_with_a_reason(case: str) -> None:
    with pytest.raises(MetricsRejected) as exc:
        parse_engine(BAD_ENGINE[case], VLLM)
    assert str(exc.value)


BAD_DCGM = {
    "NaN util": 'DCGM_FI_DEV_GPU_UTIL{gpu="0"} NaN\n',
    "util above 100": 'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 250\n',
    "negative fb": 'DCGM_FI_DEV_FB_USED{gpu="0"} -1\n',
    "used above total": 'DCGM_FI_DEV_FB_USED{gpu="0"} 900\nDCGM_FI_DEV_FB_TOTAL{gpu="0"} 100\n',
    "no gpu label": "DCGM_FI_DEV_GPU_UTIL 5\n",
    "not dcgm": data("vllm_v0_10.txt"),
    "truncated": data("dcgm_h100.txt")[:-3],
}


@pytest.mark.parametrize("case", sorted(BAD_DCGM))
def test_bad_dcgm_pages_are_rejected(case: str) -> None:
    with pytest.raises(MetricsRejected):
        parse_dcgm(BAD_DCGM[case])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    for fn in (lambda t: parse_engine(t, VLLM), lambda t: parse_engine(t, SGLANG), parse_dcgm):
        try:
            out = fn(text)
        except MetricsRejected:
            continue
        # Whatever is accepted is plausible.
        if isinstance(out, EngineSample):
            assert out.requests_running >= 0 and out.requests_waiting >= 0
            assert out.kv_cache_usage is None or 0 <= out.kv_cache_usage <= 1
        else:
            for g in out:
                assert g.utilization is None or (math.isfinite(g.utilization) and 0 <= g.utilization <= 1)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_values_give_a_plausible_sample_or_a_rejection(run: float, wait: float, kv: float) -> None:
    text = f"vllm:num_requests_running {run!r}\nvllm:num_requests_waiting {wait!r}\nvllm:kv_cache_usage_perc {kv!r}\n"
    text = text.replace("nan", "NaN").replace("inf", "Inf")
    try:
        s = parse_engine(text, VLLM)
    except MetricsRejected:
        return
    assert 0 <= s.requests_running <= 10_000_000 and 0 <= s.requests_waiting <= 10_000_000
    assert s.kv_cache_usage is not None and 0 <= s.kv_cache_usage <= 1
