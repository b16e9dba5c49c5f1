"""The baseline for bench/extproc_overhead.py: the least an ext_proc server can do on the same stubs.

It answers the same messages our server gets on the routing path (headers → ask for the buffered body;
body → continue) and nothing else: no parsing, no policy, no header mutation.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

_BUFFER = processing_mode_pb2.ProcessingMode(request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED)


def _mutate(common: ep.CommonResponse) -> None:
    """The same header mutations the gateway sends with its routing answer (site, a reason string of
    typical length), so `--mutate` separates the cost of the answer's shape from the gateway's logic."""
    for key, value in (("x-aigrid-site", "edge"), ("x-aigrid-decision", "standard: home edge (p=0.30) affinity none")):
        opt = common.header_mutation.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode()
        opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    common.clear_route_cache = True


def _answer(req: ep.ProcessingRequest, mutate: bool = False) -> ep.ProcessingResponse:
    """The floor's answer to one message: an empty response for its phase, asking for the body after
    headers that have one (and, with `mutate`, the gateway's header mutations on the body answer)."""
    resp = ep.ProcessingResponse()
    which = req.WhichOneof("request")
    if which == "request_headers":
        resp.request_headers.SetInParent()
        if not req.request_headers.end_of_stream:
            resp.mode_override.CopyFrom(_BUFFER)
    elif which == "request_body" and mutate:
        resp.request_body.SetInParent()
        _mutate(resp.request_body.response)
    else:
        getattr(resp, which).SetInParent()
    return resp


class Bare(ep_grpc.ExternalProcessorServicer):
    def __init__(self, mutate: bool = False) -> None:
        self.mutate = mutate

    async def Process(self, request_iterator, context):  # noqa: N802
        mutate = self.mutate
        async for req in request_iterator:
            yield _answer(req, mutate)


class BareRW(ep_grpc.ExternalProcessorServicer):
    """The same answers through grpc.aio's read/write calls on the context instead of the request
    iterator and a response generator (`--rw`)."""

    async def Process(self, request_iterator, context):  # noqa: N802
        read, write = context.read, context.write
        while True:
            req = await read()
            if req is grpc.aio.EOF:
                return
            await write(_answer(req))


class BareSync(ep_grpc.ExternalProcessorServicer):
    """The same answers on grpcio's thread-pool server (one thread per stream while it lasts)."""

    def Process(self, request_iterator, context):  # noqa: N802
        for req in request_iterator:
            yield _answer(req)


def server_options(extra: list[str]) -> list[tuple[str, object]]:
    # The same server options as `aigrid serve` (extproc/gateway/server/main.py): message size for the
    # default 8 MiB body, keepalive pings through idle periods; then any --option name=value.
    max_msg = 8 * 1024 * 1024 + 1024 * 1024
    opts: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_msg),
        ("grpc.max_send_message_length", max_msg),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ]
    for o in extra:
        k, _, v = o.partition("=")
        opts.append((k, int(v) if v.lstrip("-").isdigit() else v))
    return opts


async def main(listen: str, mutate: bool, extra: list[str], rw: bool = False) -> None:
    server = grpc.aio.server(options=server_options(extra))
    ep_grpc.add_ExternalProcessorServicer_to_server(BareRW() if rw else Bare(mutate), server)
    server.add_insecure_port(listen)
    await server.start()
    print(f"bare ext_proc on {listen}", flush=True)
    await server.wait_for_termination()


def main_sync(listen: str, extra: list[str], threads: int) -> None:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=server_options(extra))
    ep_grpc.add_ExternalProcessorServicer_to_server(BareSync(), server)
    server.add_insecure_port(listen)
    server.start()
    print(f"bare ext_proc (thread pool, {threads}) on {listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--mutate", action="store_true", help="answer the body with the gateway's header mutations")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a further gRPC server option")
    ap.add_argument("--rw", action="store_true", help="grpc.aio's context.read/write instead of the iterator and a generator")
    ap.add_argument("--sync", type=int, default=0, metavar="THREADS", help="grpcio's thread-pool server instead of grpc.aio")
    a = ap.parse_args()
    if a.sync:
        main_sync(a.listen, a.option, a.sync)
    else:
        asyncio.run(main(a.listen, a.mutate, a.option, a.rw))
