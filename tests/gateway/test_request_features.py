"""Which requests are inspected, and the features built from their bodies. Pure."""

from __future__ import annotations

import json

import pytest

from extproc.gateway.request.openai import body_features, estimate_tokens, inspect_headers, parse_json_body
from extproc.gateway.request.features import SlaClass

H = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}


@pytest.mark.parametrize(
    "change, inspect, reason",
    [
        ({}, True, "inspect"),
        ({":path": "/v1/completions"}, True, "inspect"),
        ({":path": "/v1/chat/completions?x=1"}, True, "inspect"),
        ({"content-type": "application/json; charset=utf-8"}, True, "inspect"),
        ({":method": "GET"}, False, "method"),
        ({":path": "/v1/embeddings"}, False, "path"),
        ({":path": "/v1/models"}, False, "path"),
        ({"content-type": "text/plain"}, False, "content_type"),
        ({"content-type": ""}, False, "content_type"),
        ({"content-encoding": "gzip"}, False, "content_encoding"),
        ({"content-encoding": "identity"}, True, "inspect"),
        ({"content-length": "99999999"}, False, "too_large"),
        ({"content-length": "abc"}, False, "content_length"),
        ({"content-length": "100"}, True, "inspect"),
    ],
)
def test_inspect_headers(change, inspect, reason):
    h = {**H, **change}
    got = inspect_headers(h, max_body_bytes=8 * 1024 * 1024)
    assert (got.inspect, got.reason) == (inspect, reason)


def test_priority_header():
    for v, want in (("realtime", SlaClass.realtime), (" BATCH ", SlaClass.batch), ("standard", SlaClass.standard),
                    ("urgent!!", SlaClass.standard), (None, SlaClass.standard)):
        h = dict(H)
        if v is not None:
            h["x-aigrid-priority"] = v
        assert inspect_headers(h, 1 << 20).sla is want


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[1,2]", b'"str"', b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000, b'{"a": NaN}'],
)
def test_unparseable_bodies(body):
    assert parse_json_body(body) is None


def test_features_chat():
    body = {"model": "llama", "stream": True, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "a" * 400}, {"type": "image_url", "image_url": {"url": "x"}}]},
    ]}
    f = body_features("/v1/chat/completions", body, SlaClass.batch)
    assert f.model == "llama" and f.stream and f.sla is SlaClass.batch
    assert 100 <= f.prompt_tokens <= 120
    assert f.conversation_key and f.conversation_key.startswith("p:")


def test_features_completions_and_odd_shapes():
    f = body_features("/v1/completions", {"prompt": "word " * 100, "model": 3}, SlaClass.standard)
    assert f.model is None and 100 <= f.prompt_tokens <= 130 and f.conversation_key is None
    f = body_features("/v1/completions", {"prompt": ["ab", [1, 2, 3]]}, SlaClass.standard)
    assert f.prompt_tokens == 4
    f = body_features("/v1/chat/completions", {"messages": "not a list"}, SlaClass.standard)
    assert f.prompt_tokens == 0 and f.conversation_key is None


def test_conversation_key_stable_across_turns():
    turn1 = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "first question"}]}
    turn2 = {"messages": [*turn1["messages"], {"role": "assistant", "content": "answer"}, {"role": "user", "content": "follow up"}]}
    other = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "another chat"}]}
    k1 = body_features("/v1/chat/completions", turn1, SlaClass.standard).conversation_key
    k2 = body_features("/v1/chat/completions", turn2, SlaClass.standard).conversation_key
    k3 = body_features("/v1/chat/completions", other, SlaClass.standard).conversation_key
    assert k1 == k2 != k3
    # Explicit keys win: header, then OpenAI `user`.
    assert body_features("/v1/chat/completions", {**turn1, "user": "u1"}, SlaClass.standard, "conv-9").conversation_key == "h:conv-9"
    assert body_features("/v1/chat/completions", {**turn1, "user": "u1"}, SlaClass.standard).conversation_key == "u:u1"


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) == 100
    ja = "キャリア網は分散AI推論基盤" * 10
    assert 100 <= estimate_tokens(ja) <= 160
    assert estimate_tokens("\ud800 lone surrogate") > 0
    assert json.dumps(estimate_tokens("😀" * 4))
