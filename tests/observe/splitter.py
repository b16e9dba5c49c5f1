"""An upstream for tests that writes a fixed OpenAI-shaped answer in small pieces that cut through SSE
events and JSON, with pauses between them so each piece reaches Envoy as its own chunk. Deterministic:
the same request gets the same bytes, so what a client receives can be compared byte for byte."""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

# Bytes per write, in turn, for bodies: cuts every event (and the usage chunk) at shifting offsets.
PIECES = (7, 2, 7, 5, 1, 9, 3, 4)


def tricky_pieces(data: bytes) -> list[int]:
    """Piece sizes for a stream being stripped where, as often as possible, the bytes passed on for a
    piece have the piece's own length but not its content (bytes held from the previous piece plus
    part of this one): a strip that compared lengths instead of bytes would lose or repeat data."""
    from extproc.gateway.observe.usage import SseUsageScanner  # noqa: PLC0415 (test helper, same rule as Lua)

    pieces: list[int] = []
    pos = 0
    sc = SseUsageScanner(strip=True)
    while pos < len(data):
        chosen = 7
        for n in range(1, 400):
            probe = SseUsageScanner(strip=True)
            probe._pending = sc._pending  # same held bytes as the real scanner
            out = probe.feed(data[pos : pos + n])
            if len(out) == n and out != data[pos : pos + n]:
                chosen = n
                break
        sc.feed(data[pos : pos + chosen])
        pieces.append(chosen)
        pos += chosen
    return pieces
PROMPT, COMPLETION = 23, 5


def stream_bytes(include_usage: bool) -> bytes:
    ev = []
    head = {"id": "chatcmpl-split", "object": "chat.completion.chunk", "created": 1, "model": "split"}
    ev.append({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    for w in ["One", " two", " \\n\\n three", ' "usage": {', " five"]:
        ev.append({**head, "choices": [{"index": 0, "delta": {"content": w}}]})
    ev.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        ev.append({**head, "choices": [], "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in ev) + b"data: [DONE]\n\n"


def body_bytes() -> bytes:
    return json.dumps({
        "id": "chatcmpl-split", "object": "chat.completion", "model": "split",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "One two"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION},
    }).encode()


async def chat(request: web.Request) -> web.StreamResponse:
    req = await request.json()
    stream = req.get("stream") is True
    data = stream_bytes(bool((req.get("stream_options") or {}).get("include_usage"))) if stream else body_bytes()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream" if stream else "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    sizes = tricky_pieces(data) if stream else PIECES
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        await resp.write(data[i : i + n])
        await asyncio.sleep(0.002)
        i, k = i + n, k + 1
    await resp.write_eof()
    return resp


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
