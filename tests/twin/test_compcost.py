"""The coarse step's cost model (issue 17, item 4): queues, the embedding thread's BM25 fallback, caches."""

from __future__ import annotations

import pytest

from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.compcost import CoarseCosts, CoarseStage
from extproc.tools.twin.gateway_adapter import config_dict
from extproc.tools.twin.grid import run_grid
from extproc.tools.twin.metrics import summarize
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario

COSTS = CoarseCosts(pipeline_tokens_per_s=100_000, lexical_tokens_per_s=200_000, dense_cold_s=0.5, dense_warm_s=0.02)


def test_bm25_only_lexical_thread_is_a_fifo_queue() -> None:
    st = CoarseStage(COSTS, wants_dense=False)
    a = st.charge(0.0, "p1", ("d1",), 20_000, 1.0)  # 0.1 s on the lexical thread + 0.1 s on the loop
    b = st.charge(0.05, "p2", ("d2",), 20_000, 1.0)  # waits 0.05 s for the thread
    assert a.method == b.method == "bm25"
    assert a.latency_s == pytest.approx(0.2)
    assert b.queued_s == pytest.approx(0.05)
    assert b.latency_s == pytest.approx(0.05 + 0.1 + 0.1)
    assert a.cpu_s == b.cpu_s == pytest.approx(0.2)


def test_a_prompt_ranked_before_costs_only_the_loop() -> None:
    st = CoarseStage(COSTS, wants_dense=True)
    st.charge(0.0, "p1", ("d1",), 20_000, 1.0)
    again = st.charge(10.0, "p1", ("d1",), 20_000, 1.0)
    assert again.method == "cached"
    assert again.latency_s == again.cpu_s == pytest.approx(0.1)


def test_busy_embedding_thread_falls_back_to_bm25_and_warm_vectors_are_cheap() -> None:
    st = CoarseStage(COSTS, wants_dense=True)
    a = st.charge(0.0, "p1", ("d1", "d2"), 20_000, 1.0)
    assert a.method == "hybrid"
    assert a.latency_s == pytest.approx(0.1 + 0.5 + 0.1)
    b = st.charge(0.2, "p2", ("d3",), 20_000, 1.0)  # the thread is busy until 0.6
    assert b.method == "bm25(busy)"
    c = st.charge(1.0, "p3", ("d1", "d2"), 20_000, 1.0)  # same documents, another question: warm vectors
    assert c.method == "hybrid"
    assert c.latency_s == pytest.approx(0.1 + 0.02 + 0.1)
    assert st.fallback_share() == pytest.approx(1 / 3)


def test_late_dense_pass_gives_bm25_at_the_deadline() -> None:
    st = CoarseStage(COSTS, wants_dense=True)
    a = st.charge(0.0, "p1", ("d1",), 20_000, 0.3)
    assert a.method == "bm25(timeout)"
    assert a.latency_s == pytest.approx(0.3 + 0.1)
    # The thread still finishes the pass: busy until 0.6.
    assert st.charge(0.4, "p2", ("d9",), 20_000, 1.0).method == "bm25(busy)"


def test_no_model_means_bm25() -> None:
    st = CoarseStage(CoarseCosts(100_000, 200_000), wants_dense=True)
    assert st.charge(0.0, "p", ("d",), 1000, 1.0).method == "bm25"
    assert st.fallback_share() is None


def test_twin_charges_measured_costs_and_reports_fallbacks() -> None:
    sc = load_scenario(REFERENCE_SCENARIO)
    sw = sc.sweep.model_copy(update={"duration_s": 6.0, "warmup_s": 1.0})
    comp = sc.compressor.model_copy(update={"coarse_tokens_per_s": 250_000, "lexical_tokens_per_s": 400_000,
                                            "dense_cold_s": 0.8, "dense_warm_s": 0.02, "ranker": "auto"})
    msc = sc.model_copy(update={"sweep": sw, "compressor": comp})
    cfg, _ = config_dict(msc, ARMS["R+C"])
    assert cfg["compression"]["coarse_tokens_per_s"] == 250_000  # the rewriter decides with the same figure
    assert cfg["compression"]["ranker"] == "auto"
    s = summarize(msc, run_grid(msc, ARMS["R+C"], 60.0, 1), 60.0)
    assert sum(s["coarse_rankings"].values()) > 0
    assert s["coarse_rankings"].get("bm25(busy)", 0) > 0  # 0.8 s passes cannot keep up at 60 req/s
    assert 0 < s["dense_fallback_share"] <= 1
    # Without measured figures the twin charges as before (no rankings reported).
    plain = summarize(sc.model_copy(update={"sweep": sw}), run_grid(sc.model_copy(update={"sweep": sw}), ARMS["R+C"], 60.0, 1), 60.0)
    assert "coarse_rankings" not in plain
