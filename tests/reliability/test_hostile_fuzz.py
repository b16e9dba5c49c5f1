"""Hostile input, fuzzed (hypothesis), through the pure request path and the whole rewriter as the gateway
calls it: arbitrary bytes and arbitrary JSON never raise; a rewritten body is always valid JSON equal to
the input except in prompt text; every header value the gateway sets is a clean header value."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compression"))

from fakes import EveryOther, make_request  # type: ignore[import-not-found]  # noqa: E402

from extproc.gateway.compression.core.coarse import CoarseRanker  # noqa: E402
from extproc.gateway.compression.rewriter import CompressionRewriter  # noqa: E402
from extproc.gateway.config.compression import CompressionSettings  # noqa: E402
from extproc.gateway.request.openai import body_features, inspect_headers, parse_json_body  # noqa: E402
from extproc.gateway.compression.seam import Rewrite  # noqa: E402
from extproc.gateway.request.features import SlaClass  # noqa: E402

CHAT = "/v1/chat/completions"
# A header value Envoy accepts: visible ASCII/obs-text, spaces and tabs; no CR, LF or NUL.
CLEAN_HEADER = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
REWRITER = CompressionRewriter(
    CompressionSettings(enabled=True, fixed_rate=0.5, break_even=False, min_prompt_tokens=0, min_segment_tokens=4),
    fine=EveryOther(), ranker=CoarseRanker("bm25"),
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                           max_leaves=25)
words = st.lists(st.sampled_from("the edge site routes long prompts when busy 推論 基盤 \n\n Question: why? Document [1]:".split(" ")), min_size=30, max_size=120).map(" ".join)
part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.one_of(words, json_values)),
    st.just({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}),
    st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
    st.just({"type": "file", "file": {"file_id": "f1"}}),
    st.dictionaries(st.sampled_from(["type", "text", "x"]), json_values, max_size=3),
    json_values,
)
roles = st.sampled_from(["user", "user", "tool", "system", "assistant", "developer"])
message = st.fixed_dictionaries(
    {"role": st.one_of(roles, roles, roles, json_values)},
    optional={
        "content": st.one_of(words, words, words, st.lists(part, max_size=4), json_values),
        "tool_calls": st.just([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]),
        "tool_call_id": st.text(max_size=5),
        "name": st.text(max_size=5),
    },
)
# Earlier messages are the documents of a multi-message RAG prompt when a question closes the list.
with_question = st.lists(message, min_size=1, max_size=5).map(lambda ms: [*ms, {"role": "user", "content": "Question: why is the edge busy?"}])
hostile_chat = st.fixed_dictionaries(
    {"messages": st.one_of(with_question, with_question, st.lists(message, max_size=5), json_values)},
    optional={"model": json_values, "stream": json_values, "user": json_values, "max_tokens": json_values,
              "tools": json_values, "n": st.integers(-(2**70), 2**70)},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parsed = parse_json_body(raw)
    if parsed is not None:
        body_features(CHAT, parsed, SlaClass.standard)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.dictionaries(st.sampled_from([":method", ":path", "content-type", "content-encoding", "content-length",
                                        "x-aigrid-priority"]), st.text(max_size=30)))
def test_arbitrary_headers_never_raise(headers: dict[str, str]) -> None:
    insp = inspect_headers(headers, 1 << 20)
    assert insp.reason and isinstance(insp.sla, SlaClass)


def _without_prompt_text(v: Any) -> Any:
    """The body with every string inside messages[*].content blanked: what the rewriter may not change."""
    if isinstance(v, dict):
        return {k: _without_prompt_text(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_without_prompt_text(x) for x in v]
    return "" if isinstance(v, str) else v


def _skeleton(body: dict) -> Any:
    msgs = body.get("messages")
    rest = {k: v for k, v in body.items() if k != "messages"}
    if not isinstance(msgs, list):
        return rest, msgs
    out = []
    for m in msgs:
        if isinstance(m, dict) and "content" in m:
            out.append({**m, "content": _without_prompt_text(m["content"])})
        else:
            out.append(m)
    return rest, out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_chat)
def test_rewriter_output_is_valid_json_and_differs_only_in_prompt_text(body: dict) -> None:
    """Also: the rewriter never hits an exception on the way (it would answer Skip("error") and log it)."""
    try:
        raw = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # an int beyond 64 bits: the gateway never sees such a body parsed
        return
    parsed = parse_json_body(raw)
    assert parsed is not None
    req = make_request(parsed, raw=raw)
    res = asyncio.run(REWRITER.rewrite(req))
    assert res.reason != "error" if not isinstance(res, Rewrite) else True, res.headers
    for k, v in res.headers.items():
        assert CLEAN_HEADER.match(v), (k, v)
    if isinstance(res, Rewrite):
        new = orjson.loads(res.body)  # valid JSON
        assert _skeleton(new) == _skeleton(parsed)
        assert len(res.body) <= len(raw)


def test_the_fuzzed_requests_do_get_rewritten() -> None:
    """The property above is not vacuous: a plain long chat request from the same generator is rewritten."""
    doc = " ".join(["the edge site routes long prompts when busy"] * 30)
    body = {"model": "m", "messages": [{"role": "user", "content": doc}, {"role": "user", "content": "Question: why is the edge busy?"}]}
    raw = orjson.dumps(body)
    res = asyncio.run(REWRITER.rewrite(make_request(body, raw=raw)))
    assert isinstance(res, Rewrite) and len(res.body) < len(raw)
