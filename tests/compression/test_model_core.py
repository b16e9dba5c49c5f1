"""Pure functions of the fine step: units, token assignment, chunking, keep rule, rejoin, batching plan."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.gateway.compression.core import keep as lingua


def test_whitespace_and_wordpiece_units() -> None:
    text = "Hello, wor-ld 3.14"
    assert [text[s:e] for s, e in lingua.whitespace_units(text)] == ["Hello,", "wor-ld", "3.14"]
    toks = ["Hello", ",", "wor", "##ld"]
    offs = [(0, 5), (5, 6), (7, 10), (10, 12)]
    assert lingua.wordpiece_units(toks, offs) == [(0, 5), (5, 6), (7, 12)]


def test_assign_tokens_overlap_counts_for_both_units() -> None:
    units = [(0, 2), (2, 4), (5, 9)]
    tokens = [(0, 3), (3, 4), (5, 7), (7, 9)]  # token 0 crosses the boundary between units 0 and 1
    assert lingua.assign_tokens(units, tokens) == [[0], [0, 1], [2, 3]]
    assert lingua.assign_tokens([(0, 1), (3, 4)], [(0, 1)]) == [[0], []]


def test_chunks_end_at_last_period_in_window_like_llmlingua() -> None:
    tokens = (["w"] * 9 + ["."]) * 120  # 1200 tokens, a period every 10
    chunks = lingua.chunk_tokens(tokens, [True] * len(tokens))
    assert [c.start for c in chunks] == [0, 510, 1020]
    assert all(tokens[c.end - 1] == "." for c in chunks)
    assert chunks[-1].end == 1200
    # exactly 511 tokens with the period at st+510: llmlingua includes it (511-token chunk)
    tokens = ["w"] * 510 + ["."] + ["w"] * 5
    assert lingua.chunk_tokens(tokens, [True] * len(tokens))[0] == lingua.Chunk(0, 511)


def test_chunks_never_split_a_unit_when_there_is_no_period() -> None:
    tokens = ["w"] * 1000
    is_end = [i % 7 == 6 for i in range(1000)]  # units of 7 tokens
    chunks = lingua.chunk_tokens(tokens, is_end)
    assert all(is_end[c.end - 1] for c in chunks[:-1])
    assert all(c.end - c.start <= 511 for c in chunks)
    assert chunks[-1].end == 1000


def test_model_input_truncates_sep_like_token_clf_dataset() -> None:
    assert lingua.model_input([5] * 3, 1, 2) == [1, 5, 5, 5, 2]
    assert lingua.model_input([5] * 511, 1, 2) == [1] + [5] * 511  # 513 -> 512, [SEP] dropped


def test_keep_decision_matches_llmlingua_rule() -> None:
    probs = [0.9, 0.1, 0.5, 0.7, 0.3]
    weights = [1, 1, 1, 1, 1]
    expanded = np.repeat(np.asarray(probs, dtype=np.float32), weights)
    thr = np.percentile(expanded, int(100 * 0.5 + 1))
    assert lingua.keep_decision(probs, weights, 0.5) == [p > thr for p in probs]
    assert lingua.keep_decision(probs, weights, 1.0) == [True] * 5
    assert lingua.keep_decision([], [], 0.5) == []
    assert lingua.keep_decision(probs, weights, 0.0) == [False] * 5  # no 101st-percentile crash


def test_keep_decision_weights_by_llm_tokens() -> None:
    # a heavy low-prob word pulls the threshold down: rate is counted in LLM tokens
    assert sum(lingua.keep_decision([0.1, 0.8, 0.9], [20, 1, 1], 0.5)) == 2


def test_decide_judges_each_unit_in_the_chunk_of_its_first_token() -> None:
    chunks = [lingua.Chunk(0, 3), lingua.Chunk(3, 6)]
    unit_tokens = [[0], [1, 2, 3], [4], [5], []]
    probs = np.array([0.9, 0.8, 0.1, 0.2, np.nan], dtype=np.float32)
    keep = lingua.decide(chunks, unit_tokens, probs, [1, 1, 1, 1, 1], 0.5)
    assert keep[4] is False  # a unit the model never saw is dropped
    assert keep[2] is False and keep[3] is True  # chunk 2 = units 2, 3


def test_join_kept_preserves_original_separators() -> None:
    text = "Alpha beta,\ngamma delta"
    units = lingua.whitespace_units(text)
    assert lingua.join_kept(text, units, [True, False, True, True]) == "Alpha\ngamma delta"
    ja = "私は東京に行った"
    units = [(0, 1), (1, 2), (2, 4), (4, 5), (5, 8)]
    assert lingua.join_kept(ja, units, [True, False, True, True, True]) == "私東京に行った"


def test_plan_batches_sorts_and_bounds_padding() -> None:
    lengths = [500, 10, 200, 12, 11, 480]
    batches = lingua.plan_batches(lengths, max_batch_tokens=1000, max_batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000
    assert batches[0] == [1, 4, 3, 2]  # short chunks first, sorted by length
    assert lingua.plan_batches([600], 100, 4) == [[0]]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=60), st.lists(st.booleans(), min_size=0, max_size=30))
def test_join_kept_is_char_subsequence(text: str, flags: list[bool]) -> None:
    units = lingua.whitespace_units(text)
    keep = (flags + [True] * len(units))[: len(units)]
    out = lingua.join_kept(text, units, keep)
    it = iter(text)
    assert all(ch in it for ch in out)
    kept_words = [text[s:e] for (s, e), k in zip(units, keep) if k]
    assert out.split() == kept_words
