"""Opt-in third row of bench/extproc_overhead.py: the same bare two-message pass-through as
bench/bare_extproc.py, on `envoy-data-plane` (betterproto2 messages, grpclib server) — the stack the
design card names — to keep the choice of the xds-protos + grpcio stubs for the hot path measured.

Needs `pip install envoy-data-plane grpclib` (the `bench-edp` extra); not part of the gateway's install.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import betterproto2
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as pm
from envoy_data_plane.envoy.service.ext_proc import v3 as ep
from grpclib.server import Server

_BUFFER = pm.ProcessingMode(request_body_mode=pm.ProcessingModeBodySendMode.BUFFERED)


class Bare(ep.ExternalProcessorBase):
    async def process(self, messages: AsyncIterator[ep.ProcessingRequest]) -> AsyncIterator[ep.ProcessingResponse]:
        async for req in messages:
            which, msg = betterproto2.which_one_of(req, "request")
            if which == "request_headers":
                resp = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
                if not msg.end_of_stream:
                    resp.mode_override = _BUFFER
            elif which == "request_body":
                resp = ep.ProcessingResponse(request_body=ep.BodyResponse())
            elif which in ("response_headers",):
                resp = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
            elif which in ("response_body",):
                resp = ep.ProcessingResponse(response_body=ep.BodyResponse())
            else:
                resp = ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
            yield resp


async def main(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    server = Server([Bare()])
    await server.start(host, int(port))
    print(f"bare envoy-data-plane ext_proc on {listen}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    asyncio.run(main(ap.parse_args().listen))
