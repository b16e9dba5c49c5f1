"""The Lua filter's pure parts under LuaJIT (the Lua Envoy embeds), via lupa: the usage in a response
tail, and the strip step over any split of a stream into chunks. The filter itself runs in real Envoy in
the e2e tests; here every split point is tried."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

luajit = pytest.importorskip("lupa.luajit21")

from extproc.gateway.envoyconf.usage_lua import SOURCE  # noqa: E402
from test_observe_pure import CONTENT, STREAM, USAGE_CHUNK  # noqa: E402

EXPECTED = CONTENT + b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def lua():
    rt = luajit.LuaRuntime(encoding=None)
    rt.execute(SOURCE.encode())
    return rt.globals()


def _run(lua, data: bytes, cuts: list[int]) -> tuple[bytes, int, bytes]:
    out, pending, cut, prev = [], b"", 0, 0
    for c in sorted(set(cuts)) + [len(data)]:
        kept, pending, k = lua.aigrid_strip_step(pending, data[prev:c])
        out.append(kept)
        cut += k
        prev = c
    return b"".join(out), cut, pending


def test_every_single_split_point(lua):
    for cut in range(len(STREAM) + 1):
        out, k, pending = _run(lua, STREAM, [cut])
        assert (out, k, pending) == (EXPECTED, 1, b""), cut


def test_every_pair_of_split_points_near_the_usage_chunk(lua):
    start = len(CONTENT) - 20
    end = len(CONTENT) + len(USAGE_CHUNK) + 20
    for a in range(start, end, 3):
        for b in range(a, end, 5):
            out, k, pending = _run(lua, STREAM, [a, b])
            assert (out, k, pending) == (EXPECTED, 1, b""), (a, b)


@settings(max_examples=150, deadline=None)
@given(hs.lists(hs.integers(min_value=0, max_value=len(STREAM)), max_size=15))
def test_any_splits(lua, cuts):
    assert _run(lua, STREAM, cuts) == (EXPECTED, 1, b"")


def test_held_bytes_are_never_lost_when_lengths_happen_to_match(lua):
    # pending "ab" + a chunk whose kept part has the chunk's own length: content differs, length not.
    kept, pending, _ = lua.aigrid_strip_step(b"data: 1", b"\n\ndata: 2")
    assert kept == b"data: 1\n\n" and pending == b"data: 2"


def test_crlf_and_no_usage(lua):
    crlf = STREAM.replace(b"\n\n", b"\r\n\r\n")
    assert _run(lua, crlf, [5, 50, 300])[0] == crlf.replace(USAGE_CHUNK.replace(b"\n\n", b"\r\n\r\n"), b"")
    plain = CONTENT + b"data: [DONE]\n\n"
    assert _run(lua, plain, [9, 99]) == (plain, 0, b"")


def test_last_usage(lua):
    p, c = lua.aigrid_last_usage(STREAM)
    assert (p, c) == (b"17", b"3")
    body = b'{"choices":[{"message":{"content":"say \\"usage\\": {\\"prompt_tokens\\": 99}"}}],"usage":{"prompt_tokens":4,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}'
    assert lua.aigrid_last_usage(body) == (b"4", b"2")
    # Inside a JSON string the quotes are escaped: no match.
    assert lua.aigrid_last_usage(b'{"content":"\\"usage\\": {\\"prompt_tokens\\": 9, \\"completion_tokens\\": 1}"}') == (None, None)


def test_last_model_in_a_tail(lua):
    """gen_ai.response.model on the access-log path: the last "model" value in the tail, or nil."""
    tail = b'data: {"model":"a","choices":[{}]}\n\ndata: {"model":"b-2407","choices":[],"usage":{"prompt_tokens":1}}\n\n'
    assert lua.aigrid_last_model(tail) == b"b-2407"
    assert lua.aigrid_last_model(b'{"usage":{"prompt_tokens":1,"completion_tokens":2}}') is None
    assert lua.aigrid_last_model(b'{"model" : "x y"}') == b"x y"
    assert lua.aigrid_last_model(b'{"model":"' + b"m" * 300 + b'"}') is None  # not a model name: not a label
