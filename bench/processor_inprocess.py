"""CPU per request of the processor's Python code alone, next to the bare servicer (bench/bare_extproc.py),
in one process with no gRPC and no Envoy: the two messages of a body-path request (headers, buffered
body) parsed from bytes, answered, and the answers serialized. What gRPC and Envoy cost is the same for
both and left out, so this shows what our own code adds per request, precisely enough to see a few µs
(bench/extproc_overhead.py measures the whole server through Envoy, where the shared box's noise is
larger than that). `--profile` prints where the time goes.

Ends with one JSON line: `us_per_request` (ours, bare), `extra_us`, `ratio`, and the routing call's own
cost (`routing_us`: `Gateway.route` on the same request's features, timed alone) with its share of the
extra, so the decision and the rest of the request path can be told apart.
Usage: .venv/bin/python bench/processor_inprocess.py [--requests 3000] [--rounds 3] [--repeat 8] [--usage] [--profile]
       [--routing-profile NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bare_extproc import Bare  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep  # noqa: E402

from extproc.gateway.config.schema import GatewayConfig  # noqa: E402
from extproc.gateway.loadmap.model import LoadSnapshot, SiteLoad  # noqa: E402
from extproc.gateway.server.gateway import Gateway  # noqa: E402
from extproc.gateway.server.processor import ExternalProcessor  # noqa: E402

def body(repeat: int) -> bytes:
    return json.dumps({
        "model": "llama-3.1-8b", "stream": False,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Summarise the benefits of edge inference for carriers. " * repeat}],
    }).encode()


def messages(repeat: int) -> tuple[bytes, bytes]:
    BODY = body(repeat)
    HEADERS = ((":method", "POST"), (":path", "/v1/chat/completions"), ("content-type", "application/json"),
               ("content-length", str(len(BODY))), (":authority", "gw"), ("user-agent", "aiohttp"),
               ("x-request-id", "0b6f1c1e-6a43-4c2a-9a9e-3c1d2b1e0f00"), ("accept", "*/*"), ("accept-encoding", "gzip"))
    h = ep.ProcessingRequest()
    for k, v in HEADERS:
        x = h.request_headers.headers.headers.add()
        x.key, x.raw_value = k, v.encode()
    b = ep.ProcessingRequest()
    b.request_body.body, b.request_body.end_of_stream = BODY, True
    return h.SerializeToString(), b.SerializeToString()


def processor(usage: bool, profile: str | None = None) -> ExternalProcessor:
    cfg = GatewayConfig.model_validate({"sites": [{"name": "edge", "role": "edge", "endpoints": ["127.0.0.1:1"]},
                                                  {"name": "remote", "endpoints": ["127.0.0.1:2"]}],
                                        "observability": {"usage": usage},
                                        **({"routing": {"profile": profile}} if profile else {})})
    now = time.monotonic()
    snap = LoadSnapshot(sites={s: SiteLoad(s, 1, 1, 1, 0.3, 0.3, 0.3, 3, 0, 0, now + 1e6) for s in ("edge", "remote")},
                        connected=True, built_at=now)
    gw = Gateway(cfg, lambda: snap)
    gw.on_snapshot(snap)
    if not usage:
        return ExternalProcessor(gw)
    from prometheus_client import CollectorRegistry

    from extproc.gateway.observe.observer import ResponseObserver

    return ExternalProcessor(gw, ResponseObserver(cfg.observability, CollectorRegistry(), ["edge", "remote"]))


async def per_request_us(servicer, n: int, hb: bytes, bb: bytes) -> float:  # type: ignore[no-untyped-def]
    async def stream():  # type: ignore[no-untyped-def]
        yield ep.ProcessingRequest.FromString(hb)
        yield ep.ProcessingRequest.FromString(bb)

    t = time.process_time()
    for _ in range(n):
        async for r in servicer.Process(stream(), None):
            r.SerializeToString()
    return (time.process_time() - t) / n * 1e6


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--repeat", type=int, default=8, help="times the user sentence repeats (56 bytes each)")
    ap.add_argument("--usage", action="store_true", help="with observability.usage (the response side's summary)")
    ap.add_argument("--routing-profile", default=None, help="routing.profile (default: the config's default, aigrid)")
    args = ap.parse_args()
    hb, bb = messages(args.repeat)
    ours, bare = processor(args.usage, args.routing_profile), Bare()
    for s in (ours, bare):
        await per_request_us(s, 300, hb, bb)
    a, b = [], []
    for _ in range(args.rounds):  # alternating, so drifts of the shared box hit both
        a.append(await per_request_us(ours, args.requests, hb, bb))
        b.append(await per_request_us(bare, args.requests, hb, bb))
        print(f"ours {a[-1]:.1f} µs/request, bare {b[-1]:.1f}", file=sys.stderr)
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        await per_request_us(ours, args.requests, hb, bb)
        pr.disable()
        pstats.Stats(pr, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    # The routing call's share: Gateway.route on this request's features alone (the decision: views,
    # in-flight counts, the profile's steps, its metric), timed the same way in rounds of its own.
    gw = ours.gw
    req_h, req_b = ep.ProcessingRequest.FromString(hb), ep.ProcessingRequest.FromString(bb)
    from extproc.gateway.observe.headers import header_map

    heads = header_map(req_h.request_headers, gw.wanted_headers)
    out, _ = gw.route_body_now(gw.inspect(heads), req_b.request_body.body, heads)
    assert out.features is not None
    features = out.features
    r = []
    for _ in range(args.rounds):
        t = time.process_time()
        for _ in range(args.requests):
            gw.route(features)
        r.append((time.process_time() - t) / args.requests * 1e6)
    ma, mb, mr = statistics.median(a), statistics.median(b), statistics.median(r)
    print(f"routing call alone {mr:.1f} µs (profile {gw.config.active_profile})", file=sys.stderr)
    # Best round beside the median: on a shared box the fastest round is the one least disturbed.
    print(json.dumps({"us_per_request": {"ours": ma, "bare": mb}, "best_us_per_request": {"ours": min(a), "bare": min(b)},
                      "extra_us": ma - mb, "ratio": ma / mb,
                      "routing_us": mr, "routing_share_of_extra": mr / (ma - mb), "extra_without_routing_us": ma - mb - mr,
                      "profile": gw.config.active_profile}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
