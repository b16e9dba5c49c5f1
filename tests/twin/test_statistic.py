"""The goodput statistic: the Wilson bound, the pooled rule, run lengths, the request bootstrap, and the
miss that a lost gold fact is. Pure (the last test runs the twin briefly)."""

from __future__ import annotations

import pytest

from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.experiment import _request_boots, _walk, run_experiment
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.metrics import class_shares, pooled_pass, run_duration, summarize, wilson_lower
from extproc.tools.twin.scenario import GoodputRule, parse_scenario

# The compression arms rank each corpus with the shipped ranker (MiniLM) once per machine (then from the
# on-disk cache): minutes of CPU on a first run on a loaded 2-core box, past the suite's 180 s default.
pytestmark = pytest.mark.timeout(900)

SMALL = {
    "sites": [
        {"name": "edge", "role": "edge", "gpu": "L40S", "rtt_ms": 1, "running_capacity": 8},
        {"name": "remote", "gpu": "H100", "replicas": 2, "rtt_ms": 8, "running_capacity": 48},
    ],
    "compressor": {"coarse_tokens_per_s": 1_500_000},
    "workload": {"rag": {"entities": 30}},
    "sweep": {"rates": [20, 40], "seeds": [1], "duration_s": 6, "warmup_s": 1, "drain_s": 10},
}


def run(met: dict[str, tuple[int, int]]) -> dict:
    """A run's summary as the statistic reads it: (met, requests) per class."""
    return {"classes": {c: {"met": m, "requests": n} for c, (m, n) in met.items()}}


def test_wilson_lower_bound_matches_the_textbook_values():
    # 95%: 0 misses in 300 -> 0.9874; 95 of 100 -> 0.8883 (Wilson 1927; e.g. Agresti & Coull 1998).
    assert wilson_lower(300, 300) == pytest.approx(0.98735, abs=1e-4)
    assert wilson_lower(95, 100) == pytest.approx(0.88825, abs=1e-4)
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(990, 1000, 0.99) < wilson_lower(990, 1000, 0.95) < 0.99


def test_pooled_rule_needs_every_targeted_class_and_can_fail_on_one_miss_too_many():
    rule = GoodputRule()
    ok, detail = pooled_pass(rule, [run({"realtime": (400, 400), "standard": (600, 610), "batch": (300, 300)})] * 2)
    assert ok and detail["realtime"]["requests"] == 800
    # 99% of realtime needs the lower bound there: 6 misses in 800 (99.25%) is not enough evidence.
    bad, detail = pooled_pass(rule, [run({"realtime": (397, 400), "standard": (600, 610), "batch": (300, 300)})] * 2)
    assert not bad and detail["realtime"]["lower_bound"] < 0.99 <= detail["realtime"]["attainment"] + 0.01
    # A class with no request at this rate constrains nothing; no request at all never passes.
    assert pooled_pass(rule, [run({"realtime": (0, 0), "standard": (600, 610), "batch": (300, 300)})])[0]
    assert not pooled_pass(rule, [run({"realtime": (0, 0), "standard": (0, 0), "batch": (0, 0)})])[0]


def test_runs_are_made_long_enough_for_the_smallest_class():
    sc = parse_scenario(SMALL)
    shares = class_shares(sc.workload)
    rule, sw = sc.goodput, sc.sweep
    d = run_duration(sc, 20)
    smallest = min(shares[c] for c in rule.targets if shares[c] > 0)
    assert d >= sw.duration_s
    assert d == pytest.approx(min(sw.max_duration_s, sw.warmup_s + 1.05 * rule.min_class_requests / (20 * smallest)))
    assert run_duration(sc, 10_000) == sw.duration_s  # a high rate has the requests already
    old = sc.model_copy(update={"goodput": GoodputRule(statistic="per_seed")})
    assert run_duration(old, 20) == sw.duration_s


def test_walk_stops_at_the_first_failure():
    assert _walk([(16, True), (32, True), (48, False), (64, True)]) == 32
    assert _walk([(16, False), (32, True)]) == 0.0


def test_request_bootstrap_is_deterministic_and_reads_the_evidence():
    sc = parse_scenario(SMALL)
    sure = {r: [run({"realtime": (500, 500), "standard": (900, 900), "batch": (300, 300)})] * 3 for r in (16.0, 32.0)}
    boots = _request_boots(sc, "X", sure, 200)
    assert boots == [32.0] * 200 and boots == _request_boots(sc, "X", sure, 200)
    # At 32 req/s realtime sits right at its target: some replicates pass there, some stop at 16.
    edge = dict(sure)
    edge[32.0] = [run({"realtime": (497, 500), "standard": (900, 900), "batch": (300, 300)})] * 3
    b = _request_boots(sc, "X", edge, 400)
    assert set(b) == {16.0, 32.0}
    assert 0.05 < b.count(32.0) / len(b) < 0.95


def test_a_compressed_prompt_that_lost_the_gold_fact_is_a_miss():
    sc = parse_scenario(SMALL)
    res = run_grid(sc, ARMS["R+C"], 40, 1)
    lost = [f for f in res.flights if f.measured and f.retained is False]
    s = summarize(sc, res, 40)
    counted = sum(c["in_time_but_gold_lost"] for c in s["classes"].values())
    assert counted <= len(lost)
    for f in lost:  # none of them is counted as met
        f.retained = True
    s2 = summarize(sc, res, 40)
    assert sum(c["met"] for c in s2["classes"].values()) == sum(c["met"] for c in s["classes"].values()) + counted


def test_the_summary_names_the_statistic_and_keeps_the_old_rule_beside_it():
    sc = parse_scenario(SMALL)
    small = sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"rates": [20, 60], "bisect_steps": 1, "seeds": [1, 2]})})
    doc = run_experiment(small, ["B1", "R"])
    g = doc["arms"]["R"]["goodput"]
    assert g["statistic"].startswith("wilson") and "bootstrap over requests" in g["statistic"]
    assert set(g["requests_per_class_at_goodput"]) == {"realtime", "standard", "batch"}
    assert len(g["ci95"]) == 2 and len(g["ci95_over_seeds"]) == 2
    assert doc["arms"]["R"]["goodput_per_seed_rule"]["per_seed"] == g["per_seed"]
    assert "ci95_over_seeds" in doc["compare"]["R/B1"] and doc["compare"]["statistic"] == "wilson"
    pred = doc["arms"]["R"]["prediction_at_goodput"]
    assert pred and all(p is None or set(p) <= {"edge", "remote"} for p in pred)
    assert doc["arms"]["B1"]["prediction_at_goodput"] == [None, None]  # least loaded predicts nothing


def test_a_ratio_over_a_baseline_with_no_goodput_is_undefined_not_nan():
    """Bursty grid: round robin's goodput is 0, so R / B0 has no value; the report says so in valid
    JSON (NaN is not JSON: strict readers such as jq refuse it)."""
    import json

    from extproc.tools.twin.experiment import compare
    from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario

    sc = load_scenario(REFERENCE_SCENARIO)
    arm = lambda v: {"goodput": {"value": v, "at_rate": v}, "_boots": [v] * 4, "_seed_boots": [v] * 4, "curves": {}}  # noqa: E731
    out = compare({"R": arm(58.0), "B0": arm(0.0), "B1": arm(32.0)}, sc)
    assert out["R/B0"] == {"value": None, "ci95": [None, None], "ci95_over_seeds": [None, None], "undefined": "B0 has goodput 0"}
    assert out["R/B1"]["value"] == pytest.approx(58 / 32)
    json.dumps(out, allow_nan=False)
