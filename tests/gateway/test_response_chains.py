"""Responses API chains, pure: the key rules of /v1/responses, the chain table, the response id reader and
the summary header's conversation field."""

from __future__ import annotations

from extproc.gateway.observe.request import RequestSummary, decode_summary
from extproc.gateway.observe.usage import response_id_in, valid_response_id
from extproc.gateway.request.chains import ResponseChains
from extproc.gateway.request.features import SlaClass
from extproc.gateway.request.openai import body_features

R = "/v1/responses"


def key(body: dict, header: str | None = None, chains=None) -> str | None:  # type: ignore[no-untyped-def]
    return body_features(R, body, SlaClass.standard, header, chains=chains).conversation_key


def test_key_rules_first_match_wins_and_carry_no_client_text() -> None:
    base = {"instructions": "be brief", "input": "plan a trip to Osaka", "user": "alice", "prompt_cache_key": "pck"}
    keys = [key(base, "conv-1"), key(base), key({**base, "user": None}), key({"instructions": "be brief", "input": "plan a trip to Osaka"})]
    assert len(set(keys)) == 4  # header, user, prompt_cache_key, the prefix: each its own key
    assert all(k is not None and k.startswith("r:") and len(k) == 18 for k in keys)
    assert not any(t in k for k in keys for t in ("alice", "pck", "conv-1", "Osaka"))  # type: ignore[operator]
    # The prefix key: instructions plus the first input item, whatever follows.
    a = key({"instructions": "i", "input": [{"role": "user", "content": "x"}]})
    b = key({"instructions": "i", "input": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    assert a == b and a != key({"instructions": "j", "input": [{"role": "user", "content": "x"}]})
    assert key({"input": []}) is None and key({"input": 3}) is None


def test_previous_response_id_takes_the_chains_key_or_its_own() -> None:
    chains = ResponseChains()
    first = key({"instructions": "i", "input": "start"})
    assert first is not None
    chains.learn("resp_1", first)
    assert key({"previous_response_id": "resp_1", "input": "next"}, chains=chains.get) == first
    assert (chains.found, chains.missed) == (1, 0)
    unknown = key({"previous_response_id": "resp_9", "input": "next"}, chains=chains.get)
    assert unknown not in (None, first) and unknown == key({"previous_response_id": "resp_9", "input": "other"})
    assert chains.missed == 1
    # A client's own name for the conversation still wins over the chain.
    assert key({"previous_response_id": "resp_1", "input": "n", "prompt_cache_key": "k"}, chains=chains.get) != first


def test_chain_table_is_bounded_and_forgets() -> None:
    now = [0.0]
    t = ResponseChains(max_entries=3, ttl_s=10, clock=lambda: now[0])
    for i in range(5):
        t.learn(f"resp_{i}", f"k{i}")
    assert len(t) == 3 and t.get("resp_0") is None and t.get("resp_4") == "k4"
    t.get("resp_2")  # not refreshed by a read: only learn() moves an entry
    now[0] = 11.0
    assert t.get("resp_4") is None and len(t) == 2
    t.learn("", "k")
    t.learn("resp_x", "")
    assert len(t) == 2


def test_response_id_in_json_and_sse_heads() -> None:
    assert response_id_in(b'{"id": "resp_abc-1_X", "object": "response"}') == "resp_abc-1_X"
    sse = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_9","x":1}}\n\n'
    assert response_id_in(sse) == "resp_9"
    assert response_id_in(b'{"id": "chatcmpl-1"}') is None
    assert response_id_in(b'{"text": "\\"id\\": \\"resp_fake\\""}') is None  # inside a string: escaped quotes
    assert response_id_in(b" " * 5000 + b'{"id":"resp_late"}') is None  # only the head is read
    assert valid_response_id("resp_1") and not valid_response_id("resp_") and not valid_response_id("resp_1;x")


def test_summary_carries_the_conversation_only_when_there_is_one() -> None:
    plain = RequestSummary(model="m/x", sla="standard", operation="chat")
    assert plain.encode().count(";") == 4 and decode_summary(plain.encode()) == plain
    s = RequestSummary(model="m", sla="batch", operation="text_completion", stream=True, conversation="r:0123456789abcdef")
    assert decode_summary(s.encode()) == s
    assert decode_summary(s.encode() + ";extra") is None
