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
import time
from collections.abc import AsyncIterator

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from google.protobuf import json_format

from extproc.gateway.observe.headers import header_map
from extproc.gateway.observe.names import reason_class
from extproc.gateway.observe.observer import ResponseObserver, RoutingSide
from extproc.gateway.observe.tracing import TRACE_HEADERS, DecisionTracer
from extproc.gateway.request.openai import Inspection
from extproc.gateway.request.trust import JWT_METADATA_KEY, JWT_NAMESPACE
from extproc.gateway.server.gateway import Gateway, Outcome
from extproc.wire.contract import DECISION_HEADER, OVERHEAD_HEADER, SITE_HEADER

log = logging.getLogger(__name__)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The filter's default body mode is NONE; inspected requests ask for the whole body, buffered.
_BUFFER_BODY = processing_mode_pb2.ProcessingMode(request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED)
# Chunked bodies (no content-length): buffered up to the limit, and beyond it Envoy streams the rest
# instead of answering 413; we then see only a fragment and pass it on untouched.
_BUFFER_PARTIAL = processing_mode_pb2.ProcessingMode(
    request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL
)
# With usage injection on, inspected requests also send their response headers to the routing filter, so
# that an injected stream can switch its response body to STREAMED there (see observer.RoutingSide).
_SEND = processing_mode_pb2.ProcessingMode.SEND
_BUFFER_BODY_RESP = processing_mode_pb2.ProcessingMode(
    request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED, response_header_mode=_SEND
)
_BUFFER_PARTIAL_RESP = processing_mode_pb2.ProcessingMode(
    request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL, response_header_mode=_SEND
)


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
    def __init__(
        self, gateway: Gateway, observer: ResponseObserver | None = None, tracer: DecisionTracer | None = None
    ) -> None:
        self.gw = gateway
        self.tracer = tracer
        self._wanted = gateway.wanted_headers | TRACE_HEADERS if tracer is not None else gateway.wanted_headers
        self.observer = observer
        obs = gateway.config.observability
        # Only the ext_proc observation path strips in this filter (blocking, per chunk); with usage_via
        # access_log the Lua filter in Envoy strips.
        self._inject = observer is not None and obs.inject_stream_usage and obs.usage_via == "ext_proc"
        self._overhead = "overhead" in obs.client_headers
        self._phase_seconds = gateway.metrics.phase_seconds
        self._reason_children: dict[tuple[str, str, str], object] = {}
        self._phase_children: dict[str | None, object] = {}
        self._access_meta = gateway.config.envoy.access_log
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
        observer = self.observer
        side = RoutingSide()
        spent = 0.0  # processor time on this request so far (the overhead header)
        started_ns = 0  # wall clock at the request headers (the decision span's start)
        try:
            async for req in request_iterator:
                if req.observability_mode and observer is not None:
                    # The observing filter's stream: nothing to answer, ever.
                    try:
                        await observer.observe(req, request_iterator)
                    except Exception:
                        metrics.errors.labels("observe").inc()
                        log.exception("observer error; this response goes uncounted")
                    return
                t_in = time.perf_counter()
                which = req.WhichOneof("request")
                self._msg_count.get(which or "other", self._msg_count["other"]).inc()
                resp = ep.ProcessingResponse()
                try:
                    if which == "request_headers":
                        if self.tracer is not None:
                            started_ns = time.time_ns()
                        headers = header_map(req.request_headers, self._wanted)
                        insp = self.gw.inspect(headers, _jwt_payload(req) if self.gw.wants_jwt else None)
                        listing = self.gw.list_models() if insp.list_models else None
                        if listing is not None:
                            _immediate(resp, listing)
                            insp = None
                        else:
                            common = resp.request_headers.response
                            resp.request_headers.SetInParent()
                            if not insp.inspect:
                                out = self.gw.route_unparsed(insp.sla, insp.reason, inference=insp.inference)
                                self._stamp(out, t_in, 0.0, headers, started_ns)
                                _apply_outcome(common, out)
                            elif req.request_headers.end_of_stream:
                                out = self.gw.route_unparsed(insp.sla, "no_body", inference=insp.inference)
                                self._stamp(out, t_in, 0.0, headers, started_ns)
                                _apply_outcome(common, out)
                            elif not self.gw.needs_body and not self._inject:
                                # Headers-only path: no step reads the body and nothing rewrites it, so
                                # the answer goes now and the body is never sent to us.
                                out = self.gw.route_headers(insp, headers)
                                self._stamp(out, t_in, 0.0, headers, started_ns)
                                _apply_outcome(common, out)
                                insp = None
                            elif self._inject:
                                # Continue for now; the routing answer goes with the buffered body.
                                resp.mode_override.CopyFrom(_BUFFER_BODY_RESP if insp.has_length else _BUFFER_PARTIAL_RESP)
                            else:
                                resp.mode_override.CopyFrom(_BUFFER_BODY if insp.has_length else _BUFFER_PARTIAL)
                    elif which == "request_body":
                        resp.request_body.SetInParent()
                        body = req.request_body
                        if insp is not None and insp.inspect:
                            common = resp.request_body.response
                            # Read once: every read of a protobuf bytes field is a fresh copy of the body.
                            data = body.body
                            if body.end_of_stream:
                                out = await self.gw.route_body(insp, data, headers, rewrite=insp.has_length)
                            else:
                                # Only part of the body (should not happen in BUFFERED mode): never
                                # rewrite a fragment; route on load alone.
                                out = self.gw.route_unparsed(insp.sla, "partial_body", inference=True)
                            if out.immediate is not None:
                                # The gateway answers (unknown model): nothing goes upstream.
                                resp = ep.ProcessingResponse()
                                _immediate(resp, out)
                            else:
                                if observer is not None:
                                    observer.on_routed(side, out, insp.path, data)
                                self._stamp(out, t_in, spent, headers, started_ns)
                                _apply_outcome(common, out)
                                if self._access_meta and out.features is not None:
                                    # For Envoy's access log (%DYNAMIC_METADATA(aigrid:model)%).
                                    resp.dynamic_metadata.update(
                                        {"aigrid": {"model": out.features.model or "", "prompt_tokens_est": out.features.prompt_tokens}}
                                    )
                            insp = None  # answered once; later chunks (if any) just continue
                    elif which == "response_headers" and observer is not None:
                        resp.response_headers.SetInParent()
                        observer.on_response_headers(side, req.response_headers, resp)
                    elif which == "response_body" and observer is not None:
                        resp.response_body.SetInParent()
                        observer.on_response_body(side, req.response_body, resp)
                    else:
                        _continue(resp, which)
                except Exception:
                    metrics.errors.labels(which or "unknown").inc()
                    log.exception("processor error in %s; continuing unchanged", which)
                    resp = ep.ProcessingResponse()
                    _continue(resp, which)
                dt = time.perf_counter() - t_in
                spent += dt
                hist = self._phase_children.get(which)
                if hist is None:
                    hist = self._phase_children[which] = self._phase_seconds.labels(which or "unknown")
                hist.observe(dt)
                yield resp
        finally:
            metrics.streams.dec()

    def _stamp(self, out: Outcome, t_in: float, before: float, headers: dict[str, str], started_ns: int) -> None:
        """Per decision: its reason class counted; the gateway's own time on this request for the client's
        overhead header (when configured)."""
        d = out.decision
        key = (d.site, d.step, reason_class(d.step, d.reason))
        child = self._reason_children.get(key)
        if child is None:
            child = self._reason_children[key] = self.gw.metrics.decision_reasons.labels(*key)
        child.inc()
        if self._overhead:
            out.headers[OVERHEAD_HEADER] = f"{(before + time.perf_counter() - t_in) * 1000:.2f}"
        if self.tracer is not None:
            f = out.features
            attrs: dict[str, str | int | float] = {
                "aigrid.site": d.site, "aigrid.step": d.step, "aigrid.reason": d.reason,
                "aigrid.reason_class": key[2],
            }
            if f is not None:
                attrs.update({"gen_ai.request.model": f.model or "", "aigrid.sla": f.sla.value,
                              "aigrid.prompt_tokens_est": f.prompt_tokens, "gen_ai.operation.name": "chat" if f.parsed else ""})
            tp = self.tracer.decision_span(headers, attrs, started_ns or time.time_ns(), time.time_ns())
            if tp:
                out.headers["traceparent"] = tp


def _jwt_payload(req: ep.ProcessingRequest) -> dict | None:
    """The JWT payload Envoy's jwt_authn verified, from the forwarded dynamic metadata (None if absent)."""
    ns = req.metadata_context.filter_metadata.get(JWT_NAMESPACE)
    if ns is None or JWT_METADATA_KEY not in ns.fields:
        return None
    value = ns.fields[JWT_METADATA_KEY]
    return json_format.MessageToDict(value.struct_value) if value.HasField("struct_value") else None


def _continue(resp: ep.ProcessingResponse, which: str | None) -> None:
    """A phase's "continue, no change" answer."""
    if which in (
        "request_headers", "response_headers", "request_body", "response_body",
        "request_trailers", "response_trailers",
    ):
        getattr(resp, which).SetInParent()
