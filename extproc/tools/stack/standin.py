"""A stand-in upstream site for tests and `aigrid up` before real GPUs: it answers OpenAI-shaped requests
instantly and records what it received (path, headers, body) so tests can see what Envoy forwarded.

Records: GET /_aigrid/records (JSON list), DELETE /_aigrid/records to clear. Health: GET /health.
"""

from __future__ import annotations

import argparse
import base64
import ssl
import time

import orjson
from aiohttp import web


def make_app(name: str) -> web.Application:
    records: list[dict] = []

    async def completion(request: web.Request) -> web.Response:
        body = await request.read()
        records.append(
            {
                "site": name,
                "method": request.method,
                "path": request.path_qs,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body_b64": base64.b64encode(body).decode(),
                "t": time.time(),
            }
        )
        if request.path == "/v1/responses":
            return await _responses(request, body, len(records))
        return web.json_response(
            {
                "id": "cmpl-standin",
                "object": "chat.completion",
                "model": "standin",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"served by {name}"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3},
                "aigrid_site": name,
            },
            headers={"x-served-by": name},
        )

    async def _responses(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        """The Responses API's shape: a fresh `resp_` id per response (what previous_response_id names),
        as one JSON object or, with `stream: true`, as its SSE events."""
        try:
            stream = orjson.loads(body).get("stream") is True
        except (orjson.JSONDecodeError, AttributeError):
            stream = False
        obj = {
            "id": f"resp_{name}_{n}", "object": "response", "status": "completed", "model": "standin",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": f"served by {name}"}]}],
            "usage": {"input_tokens": 0, "output_tokens": 3, "total_tokens": 3},
            "aigrid_site": name,
        }
        if not stream:
            return web.json_response(obj, headers={"x-served-by": name})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "x-served-by": name})
        await resp.prepare(request)
        events = [("response.created", {"type": "response.created", "response": {**obj, "status": "in_progress", "output": []}}),
                  ("response.output_text.delta", {"type": "response.output_text.delta", "delta": f"served by {name}"}),
                  ("response.completed", {"type": "response.completed", "response": obj})]
        for kind, data in events:
            await resp.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
        await resp.write_eof()
        return resp

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_records(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(records), content_type="application/json")

    async def clear_records(_: web.Request) -> web.Response:
        records.clear()
        return web.Response(text="cleared")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/_aigrid/records", get_records)
    app.router.add_delete("/_aigrid/records", clear_records)
    app.router.add_route("*", "/{tail:.*}", completion)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description="stand-in upstream site")
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate chain (PEM)")
    ap.add_argument("--tls-key", default=None, help="... and this private key")
    args = ap.parse_args()
    ssl_context = None
    if args.tls_cert:

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    scheme = "https" if ssl_context else "http"
    print(f"standin {args.name} on {scheme}://{args.host}:{args.port}", flush=True)
    # Record bodies exactly as they arrived: no transparent gzip decoding.
    web.run_app(
        make_app(args.name), host=args.host, port=args.port, print=None, access_log=None,
        auto_decompress=False, ssl_context=ssl_context,
    )


if __name__ == "__main__":
    main()
