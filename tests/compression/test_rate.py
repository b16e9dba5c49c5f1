"""rate.py: every branch of the load curve and the break-even rule, on plain numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.gateway.compression.core.rate import (
    MAX_RHO,
    RateInputs,
    RatePolicy,
    compression_cost_s,
    decide_rate,
    floor_for,
    gpu_seconds_saved,
    load_rate,
    queue_length,
)

P = RatePolicy(min_compressible_tokens=1000, compressor_tokens_per_s=1000.0)


def inputs(**kw) -> RateInputs:
    base = dict(
        compressible_tokens=4000, sla="standard", model=None, pressure=0.9, requests_waiting=None,
        prefill_tokens_per_s=1000.0, compressor_tokens_per_s=None, deadline_s=10.0,
    )
    base.update(kw)
    return RateInputs(**base)


# ---- load curve ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("p", "want"),
    [(0.0, 1.0), (0.3, 1.0), (0.6, 0.75), (0.9, 0.5), (1.2, 0.5), (-1.0, 1.0)],
)
def test_load_rate_curve(p: float, want: float) -> None:
    assert load_rate(p, 0.3, 0.9, 0.5) == pytest.approx(want)


def test_load_rate_degenerate_band_is_a_step() -> None:
    assert load_rate(0.5, 0.5, 0.5, 0.4) == 1.0
    assert load_rate(0.51, 0.5, 0.5, 0.4) == 0.4


@given(st.floats(0, 2), st.floats(0, 2), st.floats(0.05, 1))
def test_load_rate_is_monotone_and_bounded(p: float, dp: float, floor: float) -> None:
    a, b = load_rate(p, 0.3, 0.9, floor), load_rate(p + dp, 0.3, 0.9, floor)
    assert floor - 1e-9 <= b <= a <= 1.0


def test_floors_per_class_and_model() -> None:
    pol = RatePolicy(model_floors={"llama-8b": 0.9, "tiny": 0.1})
    assert floor_for(pol, "realtime", None) == 0.8
    assert floor_for(pol, "standard", None) == 0.5
    assert floor_for(pol, "batch", None) == 0.33
    assert floor_for(pol, "unknown-class", None) == pol.default_floor
    # The more conservative of class and model wins.
    assert floor_for(pol, "batch", "llama-8b") == 0.9
    assert floor_for(pol, "realtime", "tiny") == 0.8
    assert floor_for(pol, "batch", "not-listed") == 0.33


# ---- queue and costs -------------------------------------------------------------------------------------------
def test_queue_length() -> None:
    assert queue_length(0.5, 7) == 7.0
    assert queue_length(0.5, -3) == 0.0
    assert queue_length(None, None) == 0.0
    assert queue_length(0.0, None) == 0.0
    assert queue_length(0.5, None) == pytest.approx(0.25 / 0.5)
    # Capped: the M/M/1 formula diverges at 1.
    assert queue_length(5.0, None) == pytest.approx(MAX_RHO**2 / (1 - MAX_RHO))


def test_saved_and_cost() -> None:
    assert gpu_seconds_saved(1000, 0.5, 1000.0, 0.0) == pytest.approx(0.5)
    assert gpu_seconds_saved(1000, 0.5, 1000.0, 3.0) == pytest.approx(2.0)
    assert gpu_seconds_saved(1000, 0.5, 0.0, 3.0) == 0.0
    assert compression_cost_s(1000, 500.0) == 2.0
    assert math.isinf(compression_cost_s(1000, 0.0))


# ---- decision: one test per branch -----------------------------------------------------------------------------
def test_short_prompt_is_skipped() -> None:
    d = decide_rate(P, inputs(compressible_tokens=999))
    assert (d.rate, d.reason, d.compress) == (1.0, "short", False)


def test_unknown_load_is_skipped() -> None:
    assert decide_rate(P, inputs(pressure=None)).reason == "unknown_load"


def test_idle_site_is_skipped() -> None:
    assert decide_rate(P, inputs(pressure=0.2)).reason == "idle"


def test_deadline_is_checked_before_break_even() -> None:
    d = decide_rate(P, inputs(compressible_tokens=20_000, deadline_s=1.0))
    assert d.reason == "deadline" and d.cost_s == pytest.approx(20.0) and not d.compress


def test_break_even_not_met() -> None:
    # 4000 tokens at 0.5 saves 2000 tokens = 0.2 s of a 10k tok/s GPU (no queue); costs 4 s of CPU.
    d = decide_rate(P, inputs(prefill_tokens_per_s=10_000.0, pressure=0.9, requests_waiting=0))
    assert d.reason == "break_even" and d.saved_s < d.cost_s


def test_break_even_met_through_the_queue() -> None:
    d = decide_rate(P, inputs(prefill_tokens_per_s=10_000.0, pressure=0.9, requests_waiting=100))
    assert d.reason == "compress" and d.compress and d.rate == 0.5 and d.saved_s > d.cost_s


def test_measured_compressor_speed_overrides_the_prior() -> None:
    slow = decide_rate(P, inputs(prefill_tokens_per_s=10_000.0, requests_waiting=0))
    fast = decide_rate(P, inputs(prefill_tokens_per_s=10_000.0, requests_waiting=0, compressor_tokens_per_s=1e6))
    assert slow.reason == "break_even" and fast.reason == "compress"


def test_margin() -> None:
    # saved = 2000/1000 * (1 + 0) = 2 s; cost = 4000/4000 = 1 s.
    x = inputs(requests_waiting=0, compressor_tokens_per_s=4000.0)
    assert decide_rate(RatePolicy(min_compressible_tokens=0, margin=1.0), x).reason == "compress"
    assert decide_rate(RatePolicy(min_compressible_tokens=0, margin=3.0), x).reason == "break_even"


def test_break_even_can_be_disabled() -> None:
    pol = RatePolicy(min_compressible_tokens=0, break_even=False)
    d = decide_rate(pol, inputs(prefill_tokens_per_s=1e9, requests_waiting=0))
    assert d.reason == "compress"


def test_fixed_rate_ignores_load_but_not_break_even_or_deadline() -> None:
    pol = RatePolicy(min_compressible_tokens=0, fixed_rate=0.4, break_even=False)
    assert decide_rate(pol, inputs(pressure=None)).rate == 0.4
    assert decide_rate(pol, inputs(pressure=0.0)).rate == 0.4
    assert decide_rate(pol, inputs(deadline_s=0.001)).reason == "deadline"
    pol_be = RatePolicy(min_compressible_tokens=0, fixed_rate=0.4)
    assert decide_rate(pol_be, inputs(pressure=None, prefill_tokens_per_s=1e9)).reason == "break_even"


def test_realtime_keeps_more_than_batch_at_the_same_load() -> None:
    pol = RatePolicy(min_compressible_tokens=0, break_even=False)
    rt = decide_rate(pol, inputs(sla="realtime", pressure=2.0))
    bt = decide_rate(pol, inputs(sla="batch", pressure=2.0))
    assert rt.rate == 0.8 and bt.rate == 0.33


@given(
    tokens=st.integers(0, 10**6), p=st.one_of(st.none(), st.floats(0, 3)), w=st.one_of(st.none(), st.integers(0, 500)),
    prefill=st.floats(1, 1e6), tps=st.one_of(st.none(), st.floats(1, 1e7)), dl=st.floats(0.001, 60),
    sla=st.sampled_from(["realtime", "standard", "batch", "x"]),
)
def test_decision_is_always_well_formed(tokens, p, w, prefill, tps, dl, sla) -> None:
    d = decide_rate(RatePolicy(), RateInputs(tokens, sla, None, p, w, prefill, tps, dl))
    assert 0 < d.rate <= 1
    assert d.compress == (d.reason == "compress")
    if d.compress:
        assert d.rate >= floor_for(RatePolicy(), sla, None) and d.saved_s > d.cost_s and d.cost_s <= dl
    else:
        assert d.rate == 1.0


# ---- net of the prefix cache ------------------------------------------------------------------------------
from extproc.gateway.compression.core.rate import net_gpu_seconds_saved  # noqa: E402


def test_net_saving_counts_only_uncached_tokens_and_charges_lost_hits() -> None:
    assert net_gpu_seconds_saved(1000, 0, 0.5, 1000.0, 0.0) == pytest.approx(0.5)
    # Half of them cached: removing those saves nothing, and their rewritten half must now be prefilled.
    assert net_gpu_seconds_saved(1000, 500, 0.5, 1000.0, 0.0) == pytest.approx(0.25 - 0.25)
    # All cached: compression only loses.
    assert net_gpu_seconds_saved(1000, 1000, 0.5, 1000.0, 0.0) < 0
    assert net_gpu_seconds_saved(1000, 5000, 0.5, 1000.0, 0.0) == net_gpu_seconds_saved(1000, 1000, 0.5, 1000.0, 0.0)
    assert net_gpu_seconds_saved(1000, 0, 0.5, 0.0, 0.0) == 0.0


def test_precomputed_tokens_cost_no_compressor_time() -> None:
    base = dict(pressure=0.95, requests_waiting=2, prefill_tokens_per_s=10_000.0, compressor_tokens_per_s=500.0)
    # 4000 tokens at 500 tok/s = 8 s of CPU for 4000 x 0.5 / 10k x 3 = 0.6 s of GPU: skip.
    assert decide_rate(P, inputs(**base)).reason == "break_even"
    # The same prompt, all of it compressed before (a popular document): a lookup, so it pays.
    d = decide_rate(P, inputs(**base, precomputed_tokens=4000))
    assert d.compress and d.cost_s == 0.0


def test_rewriting_the_cached_prefix_is_charged() -> None:
    base = dict(pressure=0.95, requests_waiting=20, prefill_tokens_per_s=10_000.0, compressor_tokens_per_s=50_000.0)
    assert decide_rate(P, inputs(**base)).compress
    d = decide_rate(P, inputs(**base, cached_compressible_tokens=4000))
    assert not d.compress and d.reason == "break_even" and d.saved_s < 0


def test_worked_example_in_the_docs() -> None:
    """docs/compression.md, break-even net of the prefix cache: a 2nd turn of a RAG conversation at an
    H100-class site (prefill 10,000 tok/s), our CPU compressor at 500 tok/s (bench/compressor.py, int8,
    2,048 tokens, this box), rate 0.5. Turn 2 adds 3,000 compressible tokens, 1,000 of them a shared
    document compressed before; 6,000 earlier tokens sit in the site's prefix cache and are not touched."""
    pol = RatePolicy(min_compressible_tokens=1024)
    x = dict(compressible_tokens=3000, sla="standard", model=None, pressure=0.95, prefill_tokens_per_s=10_000.0,
             compressor_tokens_per_s=500.0, deadline_s=60.0, precomputed_tokens=1000)
    # cost 2000 / 500 = 4.0 s; saved 3000 x 0.5 / 10,000 = 0.15 s per request in the queue + 1.
    d = decide_rate(pol, RateInputs(**x, requests_waiting=25))
    assert d.cost_s == pytest.approx(4.0) and d.saved_s == pytest.approx(0.15 * 26) and d.reason == "break_even"
    d = decide_rate(pol, RateInputs(**x, requests_waiting=27))
    assert d.compress and d.saved_s == pytest.approx(0.15 * 28)
    # Had the rewrite touched the 6,000 cached tokens too (9,000 compressible, 6,000 of them cached), it
    # would cost 16 s and save less than nothing: 3000 x 0.5 - 6000 x 0.5 < 0.
    bad = dict(x, compressible_tokens=9000)
    d = decide_rate(pol, RateInputs(**bad, requests_waiting=27, cached_compressible_tokens=6000))
    assert d.cost_s == pytest.approx(16.0) and d.saved_s < 0 and not d.compress


# ---- the router's predicted slack (cost-model profiles) ----------------------------------------------------------
@pytest.mark.parametrize(("slack", "want"), [(0.9, 1.0), (0.7, 1.0), (0.4, 0.75), (0.1, 0.5), (-0.5, 0.5)])
def test_the_rate_follows_the_predicted_slack_not_the_pressure(slack: float, want: float) -> None:
    # The load curve reads p = 1 - slack: room left, no compression; a predicted miss, down to the floor.
    # The pressure of 0.9 would say "floor" every time: the slack, where given, decides.
    fast = dict(requests_waiting=100, compressor_tokens_per_s=1e6)
    d = decide_rate(P, inputs(slack=slack, pressure=0.9, **fast))
    assert d.rate == pytest.approx(want)
    assert d.reason == ("idle" if want == 1.0 else "compress")


def test_a_prediction_compresses_even_where_the_pressure_is_unknown() -> None:
    d = decide_rate(P, inputs(slack=-0.2, pressure=None, requests_waiting=100, compressor_tokens_per_s=1e6))
    assert d.compress and d.rate == 0.5
    assert decide_rate(P, inputs(pressure=None)).reason == "unknown_load"  # no prediction, no guess


def test_predicted_slack_takes_the_lower_of_the_class_and_the_site() -> None:
    from extproc.gateway.compression.rewriter import predicted_slack
    from extproc.gateway.routing.framework import Decision

    assert predicted_slack(Decision("s", "", "x")) is None
    assert predicted_slack(Decision("s", "", "x", slack=0.6)) == 0.6
    assert predicted_slack(Decision("s", "", "x", slack=0.6, site_slack=0.2)) == 0.2
