"""Bodies through real Envoy: bad input passes byte-for-byte; the rewrite seam fixes content-length."""

from __future__ import annotations

import base64
import gzip
import http.client as httpclient
import json

import pytest
from harness import chat_body, http

from extproc.gateway.compression.seam import Rewrite, RewriteRequest, Skip

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


def last_body(st, site="edge") -> tuple[bytes, dict]:
    rec = st.records(site)[-1]
    return base64.b64decode(rec["body_b64"]), rec["headers"]


def deep(n: int) -> bytes:
    return b'{"messages": ' + b"[" * n + b"]" * n + b"}"


BAD = [
    ("malformed json", CHAT, b'{"model": "m", "messages": [', {"content-type": "application/json"}),
    ("invalid utf-8", CHAT, b'{"model": "m\xff\xfe", "messages": []}', {"content-type": "application/json"}),
    ("deep nesting", CHAT, deep(3000), {"content-type": "application/json"}),
    ("missing messages", CHAT, b'{"model": "m"}', {"content-type": "application/json"}),
    ("not an object", CHAT, b'[1, 2, 3]', {"content-type": "application/json"}),
    ("wrong content-type", CHAT, chat_body("x"), {"content-type": "text/plain"}),
    ("gzip", CHAT, gzip.compress(chat_body("zipped")), {"content-type": "application/json", "content-encoding": "gzip"}),
    ("unknown path", "/v1/embeddings", b'{"input": "x"}', {"content-type": "application/json"}),
    ("unpaired surrogate", CHAT, b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800 x"}]}', {"content-type": "application/json"}),
]


@pytest.fixture
def one_gateway(stack_factory):
    st = stack_factory()
    gw = st.add_gateway()
    st.publish_idle(gw)
    return st, gw


def test_bad_input_passes_unchanged(one_gateway):
    st, gw = one_gateway
    for name, path, body, headers in BAD:
        r = http("POST", gw.url(path), body, headers)
        assert r.status == 200, (name, r.status, r.body[:200])
        got, h = last_body(st)
        assert got == body, name
        assert h["x-aigrid-site"] == "edge", name
    # The processor raised nothing: every case was a planned pass-through.
    assert gw.metric("aigrid_processor_errors_total", 'phase="request_body"') in (None, 0.0)


def send_chunked(gw, body: bytes) -> int:
    conn = httpclient.HTTPConnection("127.0.0.1", gw.envoy_port, timeout=10)
    conn.putrequest("POST", CHAT)
    conn.putheader("content-type", "application/json")
    conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    step = 100 if len(body) < 100_000 else 256 * 1024
    for i in range(0, len(body), step):
        chunk = body[i : i + step]
        conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_chunked_bodies_without_content_length(one_gateway):
    st, gw = one_gateway
    body = chat_body("chunked " * 50)
    assert send_chunked(gw, body) == 200
    assert last_body(st)[0] == body
    assert st.records("edge")[-1]["headers"]["x-aigrid-site"] == "edge"
    # Larger than the buffer limit, with no content-length to warn us: still no 413, still unchanged.
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "y" * (9 * 1024 * 1024)}]}).encode()
    assert send_chunked(gw, big) == 200
    assert last_body(st)[0] == big


def test_body_over_the_limit_passes_unchanged(one_gateway):
    st, gw = one_gateway
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}).encode()
    r = gw.post(CHAT, big)
    assert r.status == 200
    assert last_body(st)[0] == big


class UpperRewriter:
    """A rewriter of our own for the seam test: upper-cases long user messages, skips short ones."""

    def __init__(self) -> None:
        self.calls = 0

    async def rewrite(self, req: RewriteRequest) -> Rewrite | Skip:
        self.calls += 1
        msgs = req.parsed["messages"]
        if req.features.prompt_tokens < 50:
            return Skip("short", {"x-aigrid-compression": "skipped=short"})
        new = {**req.parsed, "messages": [{**m, "content": m["content"].upper()[: len(m["content"]) // 2]} for m in msgs]}
        return Rewrite(json.dumps(new).encode(), {"x-aigrid-compression": "test"})

    async def close(self) -> None:
        pass


class BrokenRewriter(UpperRewriter):
    async def rewrite(self, req: RewriteRequest) -> Rewrite | Skip:
        raise RuntimeError("boom")


def test_rewrite_seam_sets_content_length(stack_factory):
    st = stack_factory()
    rw = UpperRewriter()
    gw = st.add_gateway(rewriter=rw)
    long_text = "please summarise this long document " * 40
    r = gw.post(CHAT, chat_body(long_text))
    assert r.status == 200, r.body
    got, h = last_body(st)
    assert json.loads(got)["messages"][0]["content"] == long_text.upper()[: len(long_text) // 2]
    assert int(h["content-length"]) == len(got) < len(chat_body(long_text))
    assert h["x-aigrid-compression"] == "test"
    short = chat_body("hi")
    assert gw.post(CHAT, short).status == 200
    got, h = last_body(st)
    assert got == short and h["x-aigrid-compression"] == "skipped=short"
    assert rw.calls == 2


def test_rewriter_exception_leaves_body_untouched(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(rewriter=BrokenRewriter())
    body = chat_body("long text " * 100)
    r = gw.post(CHAT, body)
    assert r.status == 200
    assert last_body(st)[0] == body
