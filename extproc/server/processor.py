"""Envoy ext_proc adapter: gRPC stream in, Gateway calls, ProcessingResponses out.

Protocol notes (see field notes):
- a "continue, no change" answer must still set its phase's oneof (`SetInParent`), or Envoy calls it
  spurious and answers 500;
- a routing header only re-routes with `clear_route_cache: true` on a response carrying a header mutation;
- a replaced body needs `content-length` set in the same response.
Any exception answers "continue unchanged" for the phase at hand and is counted: a processor bug costs a
request its routing, never the request itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.contract import DECISION_HEADER, SITE_HEADER
from extproc.request.openai import Inspection
from extproc.server.gateway import Gateway, Outcome

log = logging.getLogger(__name__)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The filter's default body mode is NONE; inspected requests ask for the whole body, buffered.
_BUFFER_BODY = processing_mode_pb2.ProcessingMode(request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED)
# Chunked bodies (no content-length): buffered up to the limit, and beyond it Envoy streams the rest
# instead of answering 413; we then see only a fragment and pass it on untouched.
_BUFFER_PARTIAL = processing_mode_pb2.ProcessingMode(
    request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL
)


def _header_map(headers: ep.HttpHeaders, wanted: frozenset[str]) -> dict[str, str]:
    """Only the headers the gateway reads: decoding every header of every request is measurable CPU."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        key = h.key
        if key in wanted:
            # Envoy sends raw_value (bytes); value is the older string field.
            out[key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _set(mut: ep.HeaderMutation, key: str, value: str) -> None:
    opt = mut.set_headers.add()
    opt.header.key = key
    opt.header.raw_value = value.encode("utf-8", "replace")
    opt.append_action = _OVERWRITE


def _immediate(resp: ep.ProcessingResponse, out: Outcome) -> None:
    """Answer the client from the gateway (model list, unknown model): Envoy sends it, nothing upstream."""
    assert out.immediate is not None
    im = resp.immediate_response
    im.status.code = out.immediate.status  # type: ignore[assignment]
    im.body = out.immediate.body
    _set(im.headers, "content-type", out.immediate.content_type)
    _set(im.headers, DECISION_HEADER, out.decision.reason[:200])


def _apply_outcome(common: ep.CommonResponse, out: Outcome) -> None:
    _set(common.header_mutation, SITE_HEADER, out.site)
    _set(common.header_mutation, DECISION_HEADER, out.decision.reason[:200])
    for k, v in out.headers.items():
        _set(common.header_mutation, k, v)
    if out.body is not None:
        common.body_mutation.body = out.body
        _set(common.header_mutation, "content-length", str(len(out.body)))
    common.clear_route_cache = True


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._wanted = gateway.wanted_headers
        m = gateway.metrics.messages
        # Children resolved once: a labelled lookup per message is measurable on the hot path.
        self._msg_count = {p: m.labels(p) for p in ("request_headers", "request_body", "other")}

    async def Process(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context
    ) -> AsyncIterator[ep.ProcessingResponse]:
        metrics = self.gw.metrics
        metrics.streams.inc()
        insp: Inspection | None = None
        headers: dict[str, str] = {}
        try:
            async for req in request_iterator:
                which = req.WhichOneof("request")
                self._msg_count.get(which or "other", self._msg_count["other"]).inc()
                resp = ep.ProcessingResponse()
                try:
                    if which == "request_headers":
                        headers = _header_map(req.request_headers, self._wanted)
                        insp = self.gw.inspect(headers)
                        listing = self.gw.list_models() if insp.list_models else None
                        if listing is not None:
                            _immediate(resp, listing)
                            insp = None
                        else:
                            common = resp.request_headers.response
                            resp.request_headers.SetInParent()
                            if not insp.inspect:
                                _apply_outcome(common, self.gw.route_unparsed(insp.sla, insp.reason, inference=insp.inference))
                            elif req.request_headers.end_of_stream:
                                _apply_outcome(common, self.gw.route_unparsed(insp.sla, "no_body", inference=insp.inference))
                            elif not self.gw.needs_body:
                                # Headers-only path: no step reads the body and nothing rewrites it, so
                                # the answer goes now and the body is never sent to us.
                                _apply_outcome(common, self.gw.route_headers(insp, headers))
                                insp = None
                            else:
                                # Continue for now; the routing answer goes with the buffered body.
                                resp.mode_override.CopyFrom(_BUFFER_BODY if insp.has_length else _BUFFER_PARTIAL)
                    elif which == "request_body":
                        resp.request_body.SetInParent()
                        body = req.request_body
                        if insp is not None and insp.inspect:
                            common = resp.request_body.response
                            if body.end_of_stream:
                                out = await self.gw.route_body(insp, body.body, headers, rewrite=insp.has_length)
                            else:
                                # Only part of the body (should not happen in BUFFERED mode): never
                                # rewrite a fragment; route on load alone.
                                out = self.gw.route_unparsed(insp.sla, "partial_body", inference=True)
                            if out.immediate is not None:
                                resp = ep.ProcessingResponse()
                                _immediate(resp, out)
                            else:
                                _apply_outcome(common, out)
                            insp = None  # answered once; later chunks (if any) just continue
                    else:
                        _continue(resp, which)
                except Exception:
                    metrics.errors.labels(which or "unknown").inc()
                    log.exception("processor error in %s; continuing unchanged", which)
                    resp = ep.ProcessingResponse()
                    _continue(resp, which)
                yield resp
        finally:
            metrics.streams.dec()


def _continue(resp: ep.ProcessingResponse, which: str | None) -> None:
    """A phase's "continue, no change" answer."""
    if which in (
        "request_headers", "response_headers", "request_body", "response_body",
        "request_trailers", "response_trailers",
    ):
        getattr(resp, which).SetInParent()
