"""SSE parsing with arbitrary chunk boundaries, and the stream accounting built on it."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.tools.loadtest.sse import SseParser, StreamStats


def _chunk(id_: int, text: str) -> str:
    return json.dumps({"id": id_, "choices": [{"index": 0, "delta": {"content": text}}]}, ensure_ascii=False)


EVENTS = [_chunk(1, "こんにちは"), _chunk(2, " world"), _chunk(3, "€uro"),
          json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}), "[DONE]"]


def _stream(sep: bytes) -> bytes:
    out = b": keep-alive comment" + sep
    for e in EVENTS:
        out += b"event: message" + sep + b"data: " + e.encode() + sep + sep
    return out


def _parse(raw: bytes, cuts: list[int]) -> list[str]:
    p = SseParser()
    out: list[str] = []
    prev = 0
    for c in sorted(set(cuts)):
        out += p.feed(raw[prev:c])
        prev = c
    out += p.feed(raw[prev:])
    out += p.close()
    return out


def test_whole_stream_each_line_ending():
    for sep in (b"\n", b"\r\n", b"\r"):
        assert _parse(_stream(sep), []) == EVENTS


def test_every_single_split_point():
    # Includes splits inside "data:", inside multi-byte UTF-8 characters and between CR and LF.
    for sep in (b"\n", b"\r\n"):
        raw = _stream(sep)
        for i in range(len(raw) + 1):
            assert _parse(raw, [i]) == EVENTS, (sep, i)


def test_byte_by_byte():
    raw = _stream(b"\r\n")
    assert _parse(raw, list(range(len(raw)))) == EVENTS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=30), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_random_chunkings(cuts, sep):
    raw = _stream(sep)
    assert _parse(raw, [c % (len(raw) + 1) for c in cuts]) == EVENTS


def test_multiline_data_and_no_space():
    p = SseParser()
    assert p.feed(b"data:a\ndata: b\n\n") == ["a\nb"]
    assert p.feed(b"id: 3\nretry: 10\n\n") == []  # no data: no event


def test_unterminated_last_event_is_delivered_on_close():
    p = SseParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.close() == ["[DONE]"]


def test_stream_stats():
    s = StreamStats()
    s.on_event(json.dumps({"choices": [{"delta": {"role": "assistant"}}]}), 1.0)  # no content yet
    s.on_event(_chunk(1, "a"), 1.5)
    s.on_event(_chunk(2, "b"), 1.7)
    s.on_event("not json", 1.8)
    s.on_event(_chunk(3, "c"), 2.0)
    s.on_event(json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}), 2.1)
    s.on_event("[DONE]", 2.2)
    assert s.first_token_t == 1.5 and s.content_events == 3 and s.done and s.bad_events == 1
    assert [round(g, 6) for g in s.gaps] == [0.2, 0.3]
    assert s.usage == {"prompt_tokens": 5, "completion_tokens": 3}


def test_stream_error_event():
    s = StreamStats()
    s.on_event(json.dumps({"error": {"message": "overloaded", "code": 503}}), 0.1)
    assert s.error == "overloaded"
