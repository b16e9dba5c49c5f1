"""Time dilation (issue 17, item 2): the sim's option, the dilated scenario, and the twin-vs-live figures."""

from __future__ import annotations

import pytest

from extproc.tools.sim import SimSiteConfig
from extproc.tools.sim.server import SimSite
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.dilation import dilated
from extproc.tools.twin.gateway_adapter import config_dict
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.live import Outcome, compare_side, figures
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario


def test_sim_time_dilation_slows_steps_not_the_link() -> None:
    plain = SimSite(SimSiteConfig(gpu="L4", link_delay_ms=4.0))
    slow = SimSite(SimSiteConfig(gpu="L4", link_delay_ms=4.0, time_dilation=10.0))
    a = plain.hw.step_time(512, 0, 512 * 513 // 2)
    b = slow.hw.step_time(512, 0, 512 * 513 // 2)
    assert b == pytest.approx(10 * a)
    # The link delay given is wall time: a dilated grid passes its link x k itself.
    assert slow.link_delay_s == plain.link_delay_s == pytest.approx(0.004)


@pytest.mark.parametrize("k", [0.5, 2000.0])
def test_sim_time_dilation_out_of_range_is_refused(k: float) -> None:
    with pytest.raises(ValueError, match="time_dilation"):
        SimSiteConfig(time_dilation=k).validate()


def test_dilated_scenario_scales_the_modelled_world_only() -> None:
    sc = load_scenario(REFERENCE_SCENARIO)
    d = dilated(sc, 10.0)
    assert d.dilation == 10.0
    for a, b in zip(sc.sites, d.sites):
        assert b.rtt_ms == pytest.approx(10 * a.rtt_ms)
        assert b.one_way_ms == pytest.approx(10 * a.one_way_ms)
    assert d.slo["realtime"].ttft_ms == pytest.approx(10 * sc.slo["realtime"].ttft_ms)
    assert d.slo["realtime"].tpot_ms == pytest.approx(10 * sc.slo["realtime"].tpot_ms)
    assert d.slo["batch"].tpot_ms is None
    assert d.workload.chat.think_time_s == pytest.approx(10 * sc.workload.chat.think_time_s)
    assert d.sweep.rates == pytest.approx([r / 10 for r in sc.sweep.rates])
    assert d.sweep.duration_s == pytest.approx(10 * sc.sweep.duration_s)
    # What runs at wall speed in the live stack does not dilate.
    assert (d.report_interval_ms, d.redis_delay_ms, d.in_flight_publish_ms) == (
        sc.report_interval_ms, sc.redis_delay_ms, sc.in_flight_publish_ms)
    assert d.compressor == sc.compressor
    assert dilated(sc, 1.0) is sc
    with pytest.raises(ValueError, match="already dilated"):
        dilated(d, 2.0)


def test_gateway_is_told_the_dilated_speeds() -> None:
    sc = load_scenario(REFERENCE_SCENARIO)
    plain, _ = config_dict(sc, ARMS["R+C"])
    slow, _ = config_dict(dilated(sc, 10.0), ARMS["R+C"])
    for a, b in zip(plain["sites"], slow["sites"]):
        assert b["prefill_tokens_per_s"] == pytest.approx(a["prefill_tokens_per_s"] / 10, rel=1e-3)
        assert b["speed"]["decode_ms"] == pytest.approx(10 * a["speed"]["decode_ms"], rel=1e-3)
        assert b["rtt_ms"] == pytest.approx(10 * a["rtt_ms"])
    assert slow["slo"]["standard"]["ttft_ms"] == pytest.approx(10 * plain["slo"]["standard"]["ttft_ms"])
    assert slow["compression"]["prefill_tokens_per_s"] == pytest.approx(
        plain["compression"].get("prefill_tokens_per_s", 10_000) / 10)
    # The compressor's own deadline is the gateway's wall time: not dilated.
    assert slow["compression"]["deadline_ms"] == plain["compression"]["deadline_ms"]


def test_dilated_twin_run_is_k_times_slower_at_light_load() -> None:
    # At 2 req/s nothing queues: the dilated run's latencies are the plain ones x k (the gateway's own
    # costs are not modelled for B1, so nothing else is left).
    sc = load_scenario(REFERENCE_SCENARIO)
    sc = sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"duration_s": 6.0, "warmup_s": 1.0})})
    plain = run_grid(sc, ARMS["B1"], 2.0, 1)
    slow = run_grid(dilated(sc, 4.0), ARMS["B1"], 0.5, 1)
    a = sorted(f.first - f.sent for f in plain.flights if f.first is not None)
    b = sorted(f.first - f.sent for f in slow.flights if f.first is not None)
    assert len(a) == len(b) > 5
    assert sum(b) == pytest.approx(4 * sum(a), rel=0.25)


def test_figures_rule_matches_the_twin() -> None:
    slo = {"realtime": {"ttft_ms": 300, "tpot_ms": 40}, "batch": {"ttft_ms": 10_000}}
    rows = [
        Outcome("realtime", 0.2, 0.03),  # met
        Outcome("realtime", 0.4, 0.03),  # TTFT over
        Outcome("realtime", 0.2, 0.05),  # TPOT over
        Outcome("batch", 5.0, 0.5, retained=False),  # in time, gold lost: a miss
        Outcome("batch", 5.0, 0.5, retained=True),  # met (no TPOT bound)
        Outcome("batch", None, None),  # never finished
    ]
    f = figures(rows, 6, 2.0, slo)
    assert f["completed"] == 5
    assert f["requests_per_s"] == 2.5
    assert f["attainment"] == pytest.approx(2 / 6, abs=1e-4)
    assert f["classes"]["realtime"]["attainment"] == pytest.approx(1 / 3, abs=1e-4)
    assert f["gold_lost"] == 1


def test_compare_side_bounds() -> None:
    live = {"requests_per_s": 2.0, "ttft_p95_ms": 100.0, "tpot_p95_ms": 50.0, "attainment": 0.9}
    ok = compare_side(live, {"requests_per_s": 2.1, "ttft_p95_ms": 119.0, "tpot_p95_ms": 41.0, "attainment": 0.85})
    assert ok["rps_within_10pct"] and ok["ttft_p95_within_20pct"] and ok["tpot_p95_within_20pct"]
    assert ok["attainment_within_10pct"]
    bad = compare_side(live, {"requests_per_s": 1.7, "ttft_p95_ms": 130.0, "tpot_p95_ms": None, "attainment": 0.5})
    assert not (bad["rps_within_10pct"] or bad["ttft_p95_within_20pct"] or bad["tpot_p95_within_20pct"]
                or bad["attainment_within_10pct"])


def test_live_stack_gateway_is_configured_as_the_twins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from extproc.tools.stack.calibrate import live_stack

    d = dilated(load_scenario(REFERENCE_SCENARIO), 5.0)
    st = live_stack(d, "R+C", tmp_path)
    st.write_config()
    live = yaml.safe_load((tmp_path / "aigrid.yaml").read_text())
    twin, _ = config_dict(d, ARMS["R+C"])
    strip = lambda s: {k: v for k, v in s.items() if k != "endpoints"}  # noqa: E731
    assert [strip(s) for s in live["sites"]] == [strip(s) for s in twin["sites"]]
    for key in ("routing", "slo", "compression"):
        assert live[key] == twin[key]
    assert live["gateway"]["rtt_probe_interval_s"] == twin["gateway"]["rtt_probe_interval_s"]
