"""The baseline for bench/extproc_overhead.py: the least an ext_proc server can do on the same stubs.

It answers the same messages our server gets on the routing path (headers → ask for the buffered body;
body → continue) and nothing else: no parsing, no policy, no header mutation.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

_BUFFER = processing_mode_pb2.ProcessingMode(request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED)


class Bare(ep_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):  # noqa: N802
        async for req in request_iterator:
            resp = ep.ProcessingResponse()
            which = req.WhichOneof("request")
            if which == "request_headers":
                resp.request_headers.SetInParent()
                if not req.request_headers.end_of_stream:
                    resp.mode_override.CopyFrom(_BUFFER)
            elif which == "request_body":
                resp.request_body.SetInParent()
            else:
                getattr(resp, which).SetInParent()
            yield resp


async def main(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 9 * 1024 * 1024)])
    ep_grpc.add_ExternalProcessorServicer_to_server(Bare(), server)
    server.add_insecure_port(listen)
    await server.start()
    print(f"bare ext_proc on {listen}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    asyncio.run(main(ap.parse_args().listen))
