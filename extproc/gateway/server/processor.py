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


def _answer_template(phase: str, site: str) -> bytes:
    """A routing answer for `phase` up to the reason header: the site header and `clear_route_cache`,
    serialized once per site. Parsing these bytes makes the answer in one C call, where setting the same
    fields one by one costs several Python-level attribute writes per request."""
    resp = ep.ProcessingResponse()
    common = getattr(resp, phase).response
    _set(common.header_mutation, SITE_HEADER, site)
    common.clear_route_cache = True
    return resp.SerializeToString()


def _fill(common: ep.CommonResponse, out: Outcome) -> None:
    """The rest of a routing answer after its template: the reason, extra headers, a new body."""
    _set(common.header_mutation, DECISION_HEADER, out.decision.reason[:200])
    if out.headers:
        for k, v in out.headers.items():
            _set(common.header_mutation, k, v)
    if out.body is not None:
        common.body_mutation.body = out.body
        _set(common.header_mutation, "content-length", str(len(out.body)))


def _apply_outcome(common: ep.CommonResponse, out: Outcome) -> None:
    """The routing answer on a response built field by field (sites outside the templates)."""
    _set(common.header_mutation, SITE_HEADER, out.site)
    common.clear_route_cache = True
    _fill(common, out)


def _constant(phase: str, mode: processing_mode_pb2.ProcessingMode | None = None) -> ep.ProcessingResponse:
    """A "continue" answer for `phase` (with a mode override): built once and yielded to every stream;
    nothing mutates it after this."""
    resp = ep.ProcessingResponse()
    getattr(resp, phase).SetInParent()
    if mode is not None:
        resp.mode_override.CopyFrom(mode)
    return resp


_PHASES = ("request_headers", "response_headers", "request_body", "response_body", "request_trailers", "response_trailers")
# "Continue, no change" per phase, and the headers answers that ask for the buffered body (by has_length).
_CONTINUE = {p: _constant(p) for p in _PHASES}
_ASK_BODY = {True: _constant("request_headers", _BUFFER_BODY), False: _constant("request_headers", _BUFFER_PARTIAL)}
_ASK_BODY_RESP = {True: _constant("request_headers", _BUFFER_BODY_RESP), False: _constant("request_headers", _BUFFER_PARTIAL_RESP)}


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
        self._ask_body = _ASK_BODY_RESP if self._inject else _ASK_BODY
        # The headers-only path: no step reads the body and nothing rewrites it.
        self._headers_only = not gateway.needs_body and not self._inject
        self._overhead = "overhead" in obs.client_headers
        self._access_meta = gateway.config.envoy.access_log
        # Sent before a held request waits: Envoy restarts this message's timer with the longer timeout.
        self._extend: ep.ProcessingResponse | None = None
        if gateway.hold_timeout_ms is not None:
            self._extend = ep.ProcessingResponse()
            self._extend.override_message_timeout.FromMilliseconds(gateway.hold_timeout_ms)
        m = gateway.metrics
        self._errors = m.errors
        self._reason_children: dict[tuple[str, str, str], object] = {}
        # Metric children resolved once: a labelled lookup per message is measurable on the hot path.
        self._streams = m.streams.labels()
        self._msg_count = {p: m.messages.labels(p) for p in ("request_headers", "request_body", "other")}
        self._phase = {p: m.phase_seconds.labels(p) for p in (*_PHASES, "unknown")}
        # Routing answers per site, serialized up to the reason (see _answer_template).
        sites = [s.name for s in gateway.config.sites]
        self._templates = {
            phase: {site: _answer_template(phase, site) for site in sites} for phase in ("request_headers", "request_body")
        }

    def _answer(self, phase: str, out: Outcome) -> ep.ProcessingResponse:
        tmpl = self._templates[phase].get(out.site)
        if tmpl is None:
            resp = ep.ProcessingResponse()
            _apply_outcome(getattr(resp, phase).response, out)
        else:
            resp = ep.ProcessingResponse.FromString(tmpl)
            _fill(getattr(resp, phase).response, out)
        return resp

    async def Process(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context
    ) -> AsyncIterator[ep.ProcessingResponse]:
        gw = self.gw
        streams = self._streams
        streams.value += 1
        insp: Inspection | None = None
        headers: dict[str, str] = {}
        observer = self.observer
        side = RoutingSide() if observer is not None else None
        spent = 0.0  # processor time on this request so far (the overhead header)
        started_ns = 0  # wall clock at the request headers (the decision span's start)
        perf = time.perf_counter
        msg_count = self._msg_count
        try:
            async for req in request_iterator:
                if observer is not None and req.observability_mode:
                    # The observing filter's stream: nothing to answer, ever.
                    try:
                        await observer.observe(req, request_iterator)
                    except Exception:
                        self._errors.labels("observe").inc()
                        log.exception("observer error; this response goes uncounted")
                    return
                t_in = perf()
                which = req.WhichOneof("request")
                msg_count.get(which or "other", msg_count["other"]).value += 1
                try:
                    if which == "request_headers":
                        if self.tracer is not None:
                            started_ns = time.time_ns()
                        rh = req.request_headers
                        headers = header_map(rh, self._wanted)
                        insp = gw.inspect(headers, _jwt_payload(req) if gw.wants_jwt else None)
                        if insp.list_models and (listing := gw.list_models()) is not None:
                            resp = ep.ProcessingResponse()
                            _immediate(resp, listing)
                            insp = None
                        elif not insp.inspect:
                            out = gw.route_unparsed(insp.sla, insp.reason, inference=insp.inference)
                            self._stamp(out, t_in, 0.0, headers, started_ns)
                            resp = self._answer("request_headers", out)
                        elif rh.end_of_stream:
                            out = gw.route_unparsed(insp.sla, "no_body", inference=insp.inference)
                            self._stamp(out, t_in, 0.0, headers, started_ns)
                            resp = self._answer("request_headers", out)
                        elif self._headers_only:
                            # Headers-only path: no step reads the body and nothing rewrites it, so the
                            # answer goes now and the body is never sent to us.
                            out = gw.route_headers(insp, headers)
                            self._stamp(out, t_in, 0.0, headers, started_ns)
                            resp = self._answer("request_headers", out)
                            insp = None
                        else:
                            # Continue for now, asking for the body (the routing answer goes with it); with
                            # injection on, the response headers come back to this filter too.
                            resp = self._ask_body[insp.has_length]
                    elif which == "request_body":
                        body = req.request_body
                        if insp is not None and insp.inspect:
                            # Read once: every read of a protobuf bytes field is a fresh copy of the body.
                            data = body.body
                            if not body.end_of_stream:
                                # Only part of the body (should not happen in BUFFERED mode): never
                                # rewrite a fragment; route on load alone.
                                out = gw.route_unparsed(insp.sla, "partial_body", inference=True)
                            else:
                                routed = gw.route_body_now(insp, data, headers)
                                if routed[0].decision.hold_ms > 0 and self._extend is not None:
                                    # Held back: Envoy's timer for this message must outlast the hold.
                                    yield self._extend
                                if gw.rewriter is None and routed[0].decision.hold_ms <= 0:
                                    out = routed[0]  # nothing to await: the decision is synchronous
                                else:
                                    out = await gw.route_body(insp, data, headers, rewrite=insp.has_length, routed=routed)
                            if out.immediate is not None:
                                # The gateway answers (unknown model): nothing goes upstream.
                                resp = ep.ProcessingResponse()
                                _immediate(resp, out)
                            else:
                                if observer is not None:
                                    observer.on_routed(side, out, insp.path, data)
                                self._stamp(out, t_in, spent, headers, started_ns)
                                resp = self._answer("request_body", out)
                                if self._access_meta and out.features is not None:
                                    # For Envoy's access log (%DYNAMIC_METADATA(aigrid:model)%).
                                    resp.dynamic_metadata.update(
                                        {"aigrid": {"model": out.features.model or "", "prompt_tokens_est": out.features.prompt_tokens}}
                                    )
                            insp = None  # answered once; later chunks (if any) just continue
                        else:
                            resp = _CONTINUE["request_body"]
                    elif which == "response_headers" and observer is not None:
                        resp = ep.ProcessingResponse()
                        resp.response_headers.SetInParent()
                        observer.on_response_headers(side, req.response_headers, resp)
                    elif which == "response_body" and observer is not None:
                        resp = ep.ProcessingResponse()
                        resp.response_body.SetInParent()
                        observer.on_response_body(side, req.response_body, resp)
                    else:
                        resp = _continue(which)
                except Exception:
                    self._errors.labels(which or "unknown").inc()
                    log.exception("processor error in %s; continuing unchanged", which)
                    resp = _continue(which)
                dt = perf() - t_in
                spent += dt
                self._phase.get(which or "unknown", self._phase["unknown"]).observe(dt)
                yield resp
        finally:
            streams.value -= 1

    def _stamp(self, out: Outcome, t_in: float, before: float, headers: dict[str, str], started_ns: int) -> None:
        """Per decision: its reason class counted; the gateway's own time on this request for the client's
        overhead header (when configured)."""
        d = out.decision
        key = (d.site, d.step, reason_class(d.step, d.reason))
        child = self._reason_children.get(key)
        if child is None:
            child = self._reason_children[key] = self.gw.metrics.decision_reasons.labels(*key)
        child.value += 1  # type: ignore[attr-defined]
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


def _continue(which: str | None) -> ep.ProcessingResponse:
    """A phase's "continue, no change" answer (shared; an unknown phase gets an empty, new response)."""
    resp = _CONTINUE.get(which or "")
    return resp if resp is not None else ep.ProcessingResponse()
