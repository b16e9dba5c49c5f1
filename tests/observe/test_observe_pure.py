"""The response side's pure core: usage from bodies and SSE streams split anywhere, the usage request
and its strip, the request summary, compression savings, label bounding and reason classes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from extproc.gateway.observe.names import OTHER, ModelLabels, reason_class
from extproc.gateway.observe.request import (
    RequestSummary,
    compression_estimate,
    decode_summary,
    inject_include_usage,
    operation_name,
    prompt_tokens_saved,
    wants_usage_injection,
)
from extproc.gateway.observe.usage import BodyCollector, SseUsageScanner, Usage, split_events, usage_from_body


def _chunk(text: str) -> bytes:
    obj = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE_CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":17,"completion_tokens":3,"total_tokens":20}}\n\n'
CONTENT = _chunk("Hel") + _chunk("lo \\n\\n wor") + _chunk("ld")
STREAM = CONTENT + USAGE_CHUNK + b"data: [DONE]\n\n"


def _feed(sc: SseUsageScanner, data: bytes, cuts: list[int]) -> bytes:
    out = []
    prev = 0
    for c in sorted(set(cuts)) + [len(data)]:
        out.append(sc.feed(data[prev:c]))
        prev = c
    out.append(sc.finish())
    return b"".join(out)


def test_every_single_split_point_gives_the_same_usage_and_strip():
    for cut in range(len(STREAM) + 1):
        sc = SseUsageScanner()
        assert _feed(sc, STREAM, [cut]) == b""
        assert sc.usage == Usage(17, 3)
        st = SseUsageScanner(strip=True)
        assert _feed(st, STREAM, [cut]) == CONTENT + b"data: [DONE]\n\n"
        assert st.stripped == 1 and st.usage == Usage(17, 3)


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_splits_give_the_same_result(cuts):
    st = SseUsageScanner(strip=True)
    assert _feed(st, STREAM, cuts) == CONTENT + b"data: [DONE]\n\n"
    assert st.usage == Usage(17, 3)


def test_crlf_events_and_one_piece_per_byte():
    data = STREAM.replace(b"\n\n", b"\r\n\r\n")
    st = SseUsageScanner(strip=True)
    assert _feed(st, data, list(range(len(data)))) == data.replace(USAGE_CHUNK.replace(b"\n\n", b"\r\n\r\n"), b"")
    assert st.usage == Usage(17, 3)


def test_usage_in_a_content_chunk_is_counted_but_never_stripped():
    # Some servers put usage on the last content chunk (continuous usage): content must survive.
    ev = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
    st = SseUsageScanner(strip=True)
    assert st.feed(ev) == ev and st.usage == Usage(5, 1) and st.stripped == 0


def test_no_usage_and_garbage_pass_untouched():
    junk = b'data: {"usage": nope\n\n' + b"data: [DONE]\n\n" + b": comment\n\n"
    st = SseUsageScanner(strip=True)
    assert _feed(st, junk, [3, 10]) == junk and st.usage is None


def test_unfinished_tail_goes_out_at_the_end():
    st = SseUsageScanner(strip=True)
    assert st.feed(b"data: {partial") == b""
    assert st.finish() == b"data: {partial"


def test_split_events_keeps_bytes():
    assert b"".join(split_events(STREAM)) == STREAM
    assert len(split_events(STREAM)) == 5


def test_body_usage():
    body = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}})
    assert usage_from_body(body) == Usage(9, 4, 2)
    c = BodyCollector()
    for i in range(0, len(body), 7):
        c.feed(body[i : i + 7])
    assert c.usage() == Usage(9, 4, 2)
    for bad in (b"", b"{", b'{"usage": null}', b'{"usage": {"prompt_tokens": -1, "completion_tokens": 2}}',
                b'{"usage": {"prompt_tokens": true, "completion_tokens": 2}}', b"[1]"):
        assert usage_from_body(bad) is None


@pytest.mark.parametrize(
    "parsed, wants",
    [
        ({"stream": True}, True),
        ({"stream": True, "stream_options": {}}, True),
        ({"stream": True, "stream_options": {"include_usage": False}}, True),
        ({"stream": True, "stream_options": {"include_usage": True}}, False),
        ({"stream": False}, False),
        ({}, False),
        ({"stream": "yes"}, False),
    ],
)
def test_wants_injection(parsed, wants):
    assert wants_usage_injection(parsed) is wants


def test_injection_splices_without_reencoding():
    body = b'  {"model":"m", "stream":true, "messages":[{"role":"user","content":"\\u00e9"}]}'
    new = inject_include_usage(body, orjson.loads(body))
    assert new is not None and new.endswith(body[3:])  # the rest is byte-identical
    assert orjson.loads(new)["stream_options"] == {"include_usage": True}
    assert orjson.loads(new)["messages"] == orjson.loads(body)["messages"]


def test_injection_keeps_other_stream_options():
    body = b'{"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":false}}'
    new = inject_include_usage(body, orjson.loads(body))
    assert orjson.loads(new)["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert inject_include_usage(b'{"stream":true,"stream_options":3}', {"stream": True, "stream_options": 3}) is None
    assert inject_include_usage(b'{"stream":false}', {"stream": False}) is None


def test_summary_round_trip_and_rejects():
    for s in (
        RequestSummary(model="meta/Llama 3;x", sla="realtime", operation="chat", injected=True, stream=True),
        RequestSummary(model="", sla="batch", operation="text_completion"),
    ):
        assert decode_summary(s.encode()) == s
    for bad in (None, "", "2;chat;standard;00;m", "1;chat;standard;2;m", "1;chat;standard;0;m", "1;chat;standard;00", "garbage"):
        assert decode_summary(bad) is None
    assert operation_name("/v1/chat/completions") == "chat"
    assert operation_name("/v1/completions") == "text_completion"


def test_compression_saved_from_real_usage():
    est = compression_estimate("tokens=4000->1000 ratio=0.25 ms=12 rate=0.25 pressure=0.9 fine=none")
    assert est == (4000, 1000)
    # The site counted 1,100 real prompt tokens; the estimate says 3/4 were cut: 3,300 real ones saved.
    assert prompt_tokens_saved(1100, est) == 3300
    assert prompt_tokens_saved(1100, None) == 0
    for bad in (None, "", "skip=short tokens=12 ms=0", "tokens=10->20", "tokens=0->0"):
        assert compression_estimate(bad) is None


def test_model_labels_are_bounded():
    ml = ModelLabels(limit=2)
    assert ml("a") == "a" and ml("b") == "b" and ml("c") == OTHER and ml("a") == "a"
    assert ml("") == OTHER and ml(None) == OTHER and ml("x" * 200) == OTHER and ml('bad"label') == OTHER


@pytest.mark.parametrize(
    "step, reason, cls",
    [
        ("fallback", "all sites drained: default site edge", "fallback_drained"),
        ("fallback", "no healthy site: default site edge", "fallback_unhealthy"),
        ("fallback", "no fresh load data: default site edge", "fallback_no_load"),
        ("fallback", "default site filtered out: default site edge", "fallback_other"),
        ("realtime", "realtime: lowest RTT with headroom edge (1.0 ms, p=0.10)", "lowest_rtt"),
        ("realtime", "realtime: no headroom anywhere, least loaded edge (p=0.99)", "no_headroom"),
        ("home", "standard: home edge (p=0.10)", "home"),
        ("home", "standard: home share 80% edge (p=0.60)", "home_share"),
        ("home", "batch: no less-loaded site to spill to edge (p=0.70)", "no_spill_target"),
        ("spill", "standard: spill 20% from edge (p=0.60) to remote (p=0.10)", "spill"),
        ("affinity", "affinity: conversation stays on edge (p=0.10)", "affinity"),
        ("least_loaded", "least loaded edge (p=0.1)", "least_loaded"),
        ("default_only", "default only edge", "default_only"),
        ("something_new", "?", "other"),
    ],
)
def test_reason_classes(step, reason, cls):
    assert reason_class(step, reason) == cls
