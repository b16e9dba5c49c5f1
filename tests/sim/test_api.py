"""The OpenAI API layer on its own (pure: no server, no event loop)."""

from __future__ import annotations

import random

import orjson
import pytest

from extproc.tools.sim.api import ApiError, ApiLimits, completion_body, natural_length, prepare_request, usage_chunk
from extproc.tools.tokens import count_chat, text_ids

LIMITS = ApiLimits(frozenset({"llama-3.1-8b"}), max_model_len=4096, ignore_eos=False,
                   natural_output_min=10, natural_output_max=40)
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which site is closest?"}]


def nat(seed):
    return natural_length(LIMITS, seed, random.Random(0))


def test_chat_prompt_ids_follow_the_count_and_the_seed_picks_the_length() -> None:
    p = prepare_request({"messages": MSGS, "seed": 5, "max_tokens": 100}, "chat", LIMITS, nat)
    assert p.prompt_len == count_chat(MSGS)
    assert p.max_output == random.Random(5).randint(10, 40) and p.finish_reason == "stop"
    q = prepare_request({"messages": MSGS, "seed": 5, "max_tokens": 100}, "chat", LIMITS, nat)
    assert q.max_output == p.max_output and q.prompt_ids == p.prompt_ids


def test_cap_ignore_eos_and_token_id_prompts() -> None:
    p = prepare_request({"prompt": "hello grid", "seed": 5, "max_tokens": 3}, "completion", LIMITS, nat)
    assert (p.max_output, p.finish_reason) == (3, "length") and p.prompt_ids == text_ids("hello grid")
    p = prepare_request({"prompt": [1, 2, 3], "max_tokens": 7, "ignore_eos": True}, "completion", LIMITS, nat)
    assert (p.prompt_ids, p.max_output, p.finish_reason) == ([1, 2, 3], 7, "length")


@pytest.mark.parametrize(("body", "param", "status"), [
    ({"messages": MSGS, "model": "gpt-x"}, "model", 404),
    ({"messages": MSGS, "seed": 1.5}, "seed", 400),
    ({"messages": MSGS, "max_tokens": 0}, "max_tokens", 400),
    ({"messages": MSGS, "max_tokens": 5000}, "max_tokens", 400),
    ({"messages": []}, "messages", 400),
    ({"messages": MSGS, "stream_options": {"include_usage": True}}, "stream_options", 400),
])
def test_bad_input_names_the_parameter(body, param, status) -> None:
    with pytest.raises(ApiError) as ei:
        prepare_request(body, "chat", LIMITS, nat)
    assert ei.value.param == param and ei.value.status == status
    err = orjson.loads(ei.value.body())
    assert err["object"] == "error" and err["param"] == param and err["code"] == status


def test_usage_carries_cached_tokens_in_bodies_and_stream_chunks() -> None:
    p = prepare_request({"messages": MSGS, "max_tokens": 4, "ignore_eos": True, "stream": True,
                         "stream_options": {"include_usage": True}}, "chat", LIMITS, nat)
    body = completion_body(p, "chatcmpl-1", "m", 0, 4, cached_tokens=16)
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 16}
    assert body["usage"]["total_tokens"] == p.prompt_len + 4
    chunk = orjson.loads(usage_chunk(p, "chatcmpl-1", "m", 0, 4, 16)[len(b"data: "):])
    assert chunk["choices"] == [] and chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
