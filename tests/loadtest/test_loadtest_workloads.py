"""Pure workload planner: seeded determinism, shares, length bounds, conversations, file validation."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from extproc.tools.loadtest.workloads import (
    CONVERSATION_HEADER,
    PRIORITY_HEADER,
    REQUEST_ID_HEADER,
    WorkloadError,
    load_workload_file,
    parse_spec,
    plan,
)


def _spec(**kw):
    base = {"requests": 400, "rate": 20.0, "seed": 7}
    base.update(kw)
    return parse_spec(base)


def test_same_seed_same_requests_different_seed_different():
    a = [(p.body, p.headers, p.at_s) for p in plan(_spec())]
    b = [(p.body, p.headers, p.at_s) for p in plan(_spec())]
    c = [(p.body, p.headers, p.at_s) for p in plan(_spec(seed=8))]
    assert a == b
    assert a != c


def test_rate_changes_arrivals_not_prompts():
    # Scenarios at different rates must still send the same prompts (split random streams).
    slow = [p.body for p in plan(_spec(rate=5.0))]
    fast = [p.body for p in plan(_spec(rate=50.0))]
    assert slow == fast


def test_poisson_arrivals_rate_and_order():
    ps = list(plan(_spec(requests=2000, rate=10.0)))
    times = [p.at_s for p in ps]
    assert times == sorted(times)
    # Mean inter-arrival 1/rate; 2000 samples put the sample mean within ~5% with overwhelming odds.
    assert times[-1] / len(times) == pytest.approx(0.1, rel=0.08)


def test_duration_bounds_open_loop():
    ps = list(plan(parse_spec({"rate": 10.0, "duration_s": 5.0})))
    assert ps and all(p.at_s <= 5.0 for p in ps)
    assert 20 < len(ps) < 90


def test_closed_loop_has_no_schedule():
    ps = list(plan(parse_spec({"concurrency": 3, "requests": 10})))
    assert len(ps) == 10 and all(p.at_s is None for p in ps)


def test_sla_and_kind_shares():
    spec = _spec(requests=3000, sla={"realtime": 0.1, "standard": 0.3, "batch": 0.6}, mix={"rag": 0.25, "chat": 0.75})
    ps = list(plan(spec))
    kinds = Counter(p.kind for p in ps)
    assert kinds["rag"] / len(ps) == pytest.approx(0.25, abs=0.04)
    # SLA is drawn per arrival for RAG; a conversation keeps the class it opened with.
    rag_sla = Counter(p.sla for p in ps if p.kind == "rag")
    n = sum(rag_sla.values())
    assert rag_sla["batch"] / n == pytest.approx(0.6, abs=0.06)
    assert rag_sla["realtime"] / n == pytest.approx(0.1, abs=0.04)
    assert all(p.headers[PRIORITY_HEADER] == p.sla for p in ps)
    assert len({p.headers[REQUEST_ID_HEADER] for p in ps}) == len(ps)


def test_rag_lengths_languages_and_gold():
    spec = _spec(requests=600, mix={"rag": 1, "chat": 0}, rag={"japanese_share": 0.3})
    ps = list(plan(spec))
    ests = [p.est_prompt_tokens for p in ps]
    # Target 500..6000 (estimated), give or take a sentence and the instruction/question wrapper.
    assert min(ests) >= 450 and max(ests) <= 6600
    assert max(ests) > 3 * min(ests), "a realistic spread, not one length"
    langs = Counter(p.lang for p in ps)
    assert langs["ja"] / len(ps) == pytest.approx(0.3, abs=0.07)
    for p in ps:
        text = p.body["messages"][-1]["content"]
        assert p.gold and p.gold in text  # the gold fact is in one of the documents
        if p.lang == "ja":
            assert "質問" in text


def test_max_tokens_spread_and_bounds():
    ps = list(plan(_spec(requests=500, max_tokens={"median": 64, "sigma": 0.8, "min": 8, "max": 300})))
    mt = [p.body["max_tokens"] for p in ps]
    assert min(mt) >= 8 and max(mt) <= 300 and len(set(mt)) > 50


def test_chat_turns_repeat_history():
    spec = _spec(requests=300, mix={"rag": 0, "chat": 1}, chat={"conversation_header": True})
    ps = list(plan(spec))
    by_conv: dict[str, list] = {}
    for p in ps:
        by_conv.setdefault(p.conversation, []).append(p)
    multi = [v for v in by_conv.values() if len(v) > 1]
    assert multi, "some conversations continue"
    for turns in multi:
        assert [p.turn for p in turns] == list(range(1, len(turns) + 1))
        assert len({p.sla for p in turns}) == 1
        assert all(p.headers[CONVERSATION_HEADER] == turns[0].conversation for p in turns)
        for prev, nxt in itertools.pairwise(turns):
            # Each turn starts with the previous turn's whole history: a stable prefix for affinity/KV.
            assert nxt.body["messages"][: len(prev.body["messages"])] == prev.body["messages"]


def test_stream_flag_sets_include_usage():
    p = next(plan(_spec()))
    assert p.body["stream"] is True and p.body["stream_options"] == {"include_usage": True}
    q = next(plan(_spec(stream=False)))
    assert "stream" not in q.body


def test_items_file(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"documents": ["Doc one says the code is ZX-1.", "Doc two."], "question": "Code?", "answer": "ZX-1", "lang": "en"}\n')
    ps = list(plan(_spec(requests=5, mix={"rag": 1, "chat": 0}, rag={"items_file": str(f)})))
    assert all(p.gold == "ZX-1" for p in ps)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"requests": 5}, "exactly one of rate"),
        ({"rate": 1, "concurrency": 2, "requests": 5}, "exactly one of rate"),
        ({"rate": 1}, "requests, duration_s"),
        ({"rate": 1, "requests": 5, "sla": {"realtime": 0, "standard": 0, "batch": 0}}, "sla"),
        ({"rate": 1, "requests": 5, "rag": {"prompt_tokens": {"median": 10, "min": 50, "max": 20}}}, "rag.prompt_tokens"),
        ({"rate": 1, "requests": 5, "rag": {"documnets_min": 3}}, "rag.documnets_min"),
        ({"rate": -1, "requests": 5}, "rate"),
    ],
)
def test_spec_errors_name_the_key(data, needle):
    with pytest.raises(WorkloadError) as e:
        parse_spec(data, "w.yaml")
    assert needle in str(e.value) and "w.yaml" in str(e.value)


def test_workload_file_errors_name_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rate: 2\nrequests: 10\nchat:\n  turns_min: 9\n  turns_max: 2\n")
    with pytest.raises(WorkloadError) as e:
        load_workload_file(f)
    assert str(f) in str(e.value) and "chat" in str(e.value)
    f.write_text("rate: [1, 2\n")
    with pytest.raises(WorkloadError, match="not valid YAML .line"):
        load_workload_file(f)
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload_file(tmp_path / "missing.yaml")


def test_workload_file_with_cli_overrides(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("concurrency: 3\nrequests: 10\nseed: 4\n")
    spec = load_workload_file(f, rate=5.0, requests=None)
    assert spec.rate == 5.0 and spec.concurrency is None and spec.requests == 10 and spec.seed == 4


def test_reference_workload_parses():
    from pathlib import Path

    import extproc.tools.loadtest as lt

    spec = load_workload_file(Path(lt.__file__).parent / "reference.yaml")
    assert spec.concurrency and spec.duration_s and spec.stream
    ps = list(itertools.islice(plan(spec), 50))
    assert {p.kind for p in ps} == {"rag", "chat"}


def test_every_request_carries_a_seed_stable_across_rates_and_arms():
    from extproc.tools.loadtest.workloads import request_seed

    slow = list(plan(_spec(requests=200, rate=5.0)))
    fast = list(plan(_spec(requests=200, rate=80.0)))
    seeds = [p.body["seed"] for p in slow]
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    assert len(set(seeds)) == len(seeds)  # one per request, not one per workload
    # The n-th request has the same seed whatever the rate (the arms of a comparison differ in rate
    # and routing, never in the requests they send).
    assert [p.body["seed"] for p in fast] == seeds
    assert seeds[:3] == [request_seed(7, 0), request_seed(7, 1), request_seed(7, 2)]
    other = [p.body["seed"] for p in plan(_spec(requests=200, rate=5.0, seed=8))]
    assert len(set(other) & set(seeds)) < 3  # a different workload seed, different request seeds
    assert all("ignore_eos" not in p.body for p in slow)


def test_fixed_output_length_sends_ignore_eos():
    ps = list(plan(_spec(requests=20, fixed_output_length=True)))
    assert all(p.body["ignore_eos"] is True and "seed" in p.body for p in ps)
