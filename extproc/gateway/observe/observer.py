"""The response side's ext_proc adapter. Two roles, one gRPC service:

- On the routing filter's stream (blocking): `RoutingSide` adds the request summary header (and, when
  configured, asks a stream for its usage); for such a stream it asks Envoy for the response body
  (STREAMED) and strips the usage chunk the client did not ask for.
- On the observing filter's stream (`observability_mode`: Envoy sends and never waits): `observe()` reads
  the response, counts usage, TTFT and durations. Nothing it does can delay a token.

The parsing is in `extproc.gateway.observe` (pure); this file only moves bytes and updates metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from prometheus_client import CollectorRegistry, Counter, Histogram

from extproc.gateway.config.observability import ObservabilitySettings
from extproc.gateway.observe import names
from extproc.gateway.observe.headers import header_map
from extproc.gateway.observe.request import (
    UPSTREAM_ATTRIBUTE,
    RequestSummary,
    compression_estimate,
    decode_summary,
    inject_include_usage,
    operation_name,
    prompt_tokens_saved,
)
from extproc.gateway.observe.usage import ID_SEARCH_BYTES, BodyCollector, SseUsageScanner, Usage, response_id_in
from extproc.wire.contract import COMPRESSION_HEADER, OBS_HEADER, RESPONSES_PATH, SITE_HEADER

log = logging.getLogger(__name__)

PM = processing_mode_pb2.ProcessingMode
_OBSERVER_WANTED = frozenset({OBS_HEADER, SITE_HEADER, COMPRESSION_HEADER, ":status", "content-type"})
_RESPONSE_WANTED = frozenset({":status", "content-type"})
# The routing filter's answer to response headers of a stream whose usage chunk must be stripped.
STREAM_RESPONSE_BODY = PM(
    request_header_mode=PM.SKIP, request_body_mode=PM.NONE, request_trailer_mode=PM.SKIP,
    response_header_mode=PM.SEND, response_body_mode=PM.STREAMED, response_trailer_mode=PM.SKIP,
)


class ObserveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        lab = names.GENAI_LABELS
        client = names.CLIENT_LABELS
        self.tokens = Histogram(
            names.TOKEN_USAGE, "Tokens used per request, from the response's own usage (gen_ai.client.token.usage)",
            [*client, "gen_ai_token_type"], buckets=names.TOKEN_BUCKETS, registry=r,
        )
        self.operation = Histogram(
            names.OPERATION_DURATION,
            "Time from the request leaving the gateway to the last response byte (gen_ai.client.operation.duration)",
            [*client, "error_type"], buckets=names.DURATION_BUCKETS, registry=r,
        )
        self.first_chunk = Histogram(
            names.TIME_TO_FIRST_CHUNK,
            "Streams: time from the request leaving the gateway to the first chunk (gen_ai.client.operation.time_to_first_chunk)",
            client, buckets=names.DURATION_BUCKETS, registry=r,
        )
        self.per_chunk = Histogram(
            names.TIME_PER_OUTPUT_CHUNK,
            "Streams: per chunk after the first, the time since the previous chunk (gen_ai.client.operation.time_per_output_chunk)",
            client, buckets=names.DURATION_BUCKETS, registry=r,
        )
        # Deprecated aliases (0.1 series): the same measurements under the first release's names and labels.
        self.ttft = Histogram(
            names.TTFT, "Deprecated alias of gen_ai_client_operation_time_to_first_chunk_seconds (removed in 0.2)",
            lab, buckets=names.TTFT_BUCKETS, registry=r,
        )
        self.duration = Histogram(
            names.REQUEST_DURATION, "Deprecated alias of gen_ai_client_operation_duration_seconds (removed in 0.2)",
            [*lab, "error_type"], buckets=names.DURATION_BUCKETS, registry=r,
        )
        self.tpot = Histogram(
            names.TIME_PER_OUTPUT_TOKEN,
            "Deprecated (removed in 0.2; see gen_ai_client_operation_time_per_output_chunk_seconds): "
            "(last - first response byte) / (output tokens - 1), streams",
            lab, buckets=names.TPOT_BUCKETS, registry=r,
        )
        self.responses = Counter(
            "aigrid_responses", "Responses the observer saw, by site and outcome (usage / no_usage / error / aborted)",
            ["site", "outcome"], registry=r,
        )
        self.saved = Counter(
            "aigrid_prompt_tokens_saved",
            "Prompt tokens compression kept off the GPUs, from the response's real prompt usage", ["site"], registry=r,
        )
        self.compressed_prompt = Counter(
            "aigrid_compressed_prompt_tokens",
            "Real prompt tokens (usage) of requests whose prompt the gateway compressed", ["site"], registry=r,
        )
        self.injected = Counter(
            "aigrid_usage_requested", "Streams the gateway asked for usage on the client's behalf", registry=r,
        )
        self.stripped = Counter(
            "aigrid_usage_chunks_stripped", "Usage chunks removed from streams whose client did not ask for them", registry=r,
        )


class RoutingSide:
    """Per routing-filter stream: what the response phases must do for this request."""

    __slots__ = ("injected", "scanner")

    def __init__(self) -> None:
        self.injected = False
        self.scanner: SseUsageScanner | None = None


class ResponseObserver:
    def __init__(
        self, settings: ObservabilitySettings, registry: CollectorRegistry, sites: list[str] = (),  # type: ignore[assignment]
        endpoints: dict[str, list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ObserveMetrics(registry)
        self.model_label = names.ModelLabels(settings.max_model_labels)
        # The response's model is the upstream's word, bounded the same way but on its own table.
        self.response_model_label = names.ModelLabels(settings.max_model_labels)
        self.server = names.ServerAddresses(endpoints)
        # Set by the server: (response id, conversation key) of each observed Responses API response.
        self.on_response_id: Callable[[str, str], None] | None = None
        self._children: dict[tuple[str, ...], _Children] = {}
        # Known label values start at 0, so a dashboard shows "none yet" rather than "no data".
        for site in sites:
            self.metrics.saved.labels(site)
            self.metrics.compressed_prompt.labels(site)
            for outcome in ("usage", "no_usage", "error", "aborted"):
                self.metrics.responses.labels(site, outcome)

    # -- routing filter ----------------------------------------------------------------------------------
    def on_routed(self, side: RoutingSide, out, path: str, body: bytes) -> None:  # out: gateway.Outcome
        """After the routing decision of an inspected request: the summary header, and the usage request."""
        f = out.features
        if f is None:
            return
        injected = False
        if self.settings.inject_stream_usage and out.parsed is not None:
            new = inject_include_usage(out.body if out.body is not None else body, out.parsed)
            if new is not None:
                out.body = new
                injected = True
                self.metrics.injected.inc()
        side.injected = injected
        summary = RequestSummary(
            model=f.model or "", sla=f.sla.value, operation=operation_name(path), injected=injected, stream=f.stream,
            conversation=(f.conversation_key or "") if path == RESPONSES_PATH and self.on_response_id is not None else "",
        )
        out.headers[OBS_HEADER] = summary.encode()

    def on_response_headers(self, side: RoutingSide, msg: ep.HttpHeaders, resp: ep.ProcessingResponse) -> None:
        """Routing filter, response headers (only sent when injection is on): stream the body of an
        injected SSE response through us so its usage chunk can be stripped."""
        if not side.injected:
            return
        h = header_map(msg, _RESPONSE_WANTED)
        if h.get(":status", "").startswith("2") and "text/event-stream" in h.get("content-type", ""):
            side.scanner = SseUsageScanner(strip=True)
            resp.mode_override.CopyFrom(STREAM_RESPONSE_BODY)

    def on_response_body(self, side: RoutingSide, msg: ep.HttpBody, resp: ep.ProcessingResponse) -> None:
        sc = side.scanner
        if sc is None:
            return
        before = sc.stripped
        data = msg.body  # read once: each read of a protobuf bytes field is a fresh copy
        out = sc.feed(data)
        if msg.end_of_stream:
            out += sc.finish()
        if sc.stripped > before:
            self.metrics.stripped.inc(sc.stripped - before)
        if out is data or out == data:
            return  # unchanged: a plain continue
        common = resp.response_body.response
        if out:
            common.body_mutation.body = out
        else:
            common.body_mutation.clear_body = True

    # -- observing filter --------------------------------------------------------------------------------
    async def observe(self, first: ep.ProcessingRequest, rest: AsyncIterator[ep.ProcessingRequest]) -> None:
        """One observability-mode stream: read everything, answer nothing (Envoy ignores answers)."""
        st = _Observed()
        try:
            self._on_message(st, first)
            async for req in rest:
                self._on_message(st, req)
        finally:
            if st.summary is not None and not st.done:
                self._finish(st, aborted=True)

    def _on_message(self, st: "_Observed", req: ep.ProcessingRequest) -> None:
        which = req.WhichOneof("request")
        if which == "response_body":
            if st.summary is None or st.done:
                return
            now = time.monotonic()
            b = req.response_body
            data = b.body  # read once: each read of a protobuf bytes field is a fresh copy
            if st.first_at is None and data:
                st.first_at = now
            if st.head is not None:
                self._look_for_id(st, data)
            if st.scanner is not None:
                st.scanner.feed(data)
                n = st.scanner.last_events
                if n:
                    # The chunks that arrived together: the first waited since the previous arrival, the
                    # others not at all (a client reading these bytes sees them at the same moment).
                    if st.chunk_at is not None:
                        st.chunk_gaps.append(now - st.chunk_at)
                        n -= 1
                    elif st.first_chunk_at is None:
                        st.first_chunk_at = now
                        n -= 1
                    st.chunk_gaps.extend([0.0] * n)
                    st.chunk_at = now
            elif st.collector is not None:
                st.collector.feed(data)
            if b.end_of_stream:
                st.end_at = now
                self._finish(st)
        elif which == "request_headers":
            h = header_map(req.request_headers, _OBSERVER_WANTED)
            st.summary = decode_summary(h.get(OBS_HEADER))
            st.site = h.get(SITE_HEADER, "")
            st.compression = compression_estimate(h.get(COMPRESSION_HEADER))
            st.t0 = time.monotonic()
        elif which == "response_headers":
            if st.summary is None:
                return
            h = header_map(req.response_headers, _OBSERVER_WANTED)
            st.status = h.get(":status", "")
            st.upstream = upstream_address(req)
            if st.summary.conversation and st.status.startswith("2") and self.on_response_id is not None:
                st.head = b""
            if "text/event-stream" in h.get("content-type", ""):
                st.scanner = SseUsageScanner()
            else:
                st.collector = BodyCollector()
            if req.response_headers.end_of_stream:
                st.end_at = time.monotonic()
                self._finish(st)

    def _look_for_id(self, st: "_Observed", chunk: bytes) -> None:
        """The response id in the first bytes of a Responses API response; learned once."""
        assert st.head is not None and st.summary is not None and self.on_response_id is not None
        st.head += chunk[: ID_SEARCH_BYTES - len(st.head)]
        rid = response_id_in(st.head)
        if rid is not None:
            self.on_response_id(rid, st.summary.conversation)
        if rid is not None or len(st.head) >= ID_SEARCH_BYTES:
            st.head = None

    def _finish(self, st: "_Observed", *, aborted: bool = False) -> None:
        st.done = True
        assert st.summary is not None
        end = st.end_at if st.end_at is not None else time.monotonic()
        usage: Usage | None = None
        if st.scanner is not None and not aborted:
            st.scanner.finish()
            usage = st.scanner.usage
        elif st.collector is not None and not aborted:
            usage = st.collector.usage()
        streamed = st.scanner is not None
        self.record(
            st.summary, st.site, st.status, usage, end - st.t0,
            ttft_s=(st.first_at - st.t0) if streamed and st.first_at is not None else None,
            last_s=(end - st.first_at) if st.first_at is not None else None,
            compression=st.compression, aborted=aborted, upstream=st.upstream,
            first_chunk_s=(st.first_chunk_at - st.t0) if st.first_chunk_at is not None else None,
            chunk_gaps=st.chunk_gaps,
        )

    def record(
        self,
        s: RequestSummary,
        site: str,
        status: str,
        usage: Usage | None,
        duration_s: float,
        *,
        ttft_s: float | None,
        last_s: float | None,
        compression: tuple[int, int] | None,
        aborted: bool = False,
        upstream: str = "",
        first_chunk_s: float | None = None,
        chunk_gaps: list[float] = (),  # type: ignore[assignment]
    ) -> None:
        """One finished response, however it was observed (ext_proc stream or access log entry).
        `ttft_s`: request to first response byte of a stream (None for non-stream); `last_s`: first to last
        response byte (time per output token); `upstream`: the host:port Envoy says it connected to;
        `first_chunk_s`: request to the first complete SSE event (None: as ttft_s); `chunk_gaps`: per
        event after the first, the time since the one before."""
        site = site or "unknown"
        request_model = self.model_label(s.model)
        labels = (s.operation, names.PROVIDER, request_model, site, s.sla)
        # gen_ai.response.model: what the response says; when it says nothing, unknown ("").
        response_model = self.response_model_label(usage.model) if usage is not None and usage.model else ""
        address, port = self.server(site, upstream)
        client = (s.operation, names.PROVIDER, request_model, response_model, address, port, site, s.sla)
        key = (*client, "")
        ch = self._children.get(key)
        if ch is None:
            ch = self._children[key] = _Children(self.metrics, labels, client)
        ok = status.startswith("2") and not aborted
        if aborted:
            outcome = "aborted"
        elif not ok:
            outcome = "error"
        else:
            outcome = "usage" if usage is not None else "no_usage"
        if outcome == "usage":
            ch.with_usage.inc()
        else:
            self.metrics.responses.labels(site, outcome).inc()
        if ok:
            ch.duration_ok.observe(duration_s)
            ch.operation_ok.observe(duration_s)
        else:
            self.metrics.duration.labels(*labels, status or "aborted").observe(duration_s)
            self.metrics.operation.labels(*client, status or "aborted").observe(duration_s)
        if usage is not None:
            ch.tokens_in.observe(usage.prompt_tokens)
            ch.tokens_out.observe(usage.completion_tokens)
            if compression is not None:
                self.metrics.compressed_prompt.labels(site).inc(usage.prompt_tokens)
                self.metrics.saved.labels(site).inc(prompt_tokens_saved(usage.prompt_tokens, compression))
        if ok and ttft_s is not None:
            ch.ttft.observe(ttft_s)
            ch.first_chunk.observe(first_chunk_s if first_chunk_s is not None else ttft_s)
            for gap in chunk_gaps:
                ch.per_chunk.observe(gap)
            if usage is not None and usage.completion_tokens > 1 and last_s is not None:
                ch.tpot.observe(last_s / (usage.completion_tokens - 1))


class _Children:
    """The metric children of one label set, looked up once (labels() costs microseconds per call)."""

    __slots__ = ("tokens_in", "tokens_out", "ttft", "tpot", "duration_ok", "with_usage",
                 "operation_ok", "first_chunk", "per_chunk")

    def __init__(self, m: ObserveMetrics, labels: tuple[str, ...], client: tuple[str, ...]) -> None:
        self.tokens_in = m.tokens.labels(*client, "input")
        self.tokens_out = m.tokens.labels(*client, "output")
        self.operation_ok = m.operation.labels(*client, "")
        self.first_chunk = m.first_chunk.labels(*client)
        self.per_chunk = m.per_chunk.labels(*client)
        self.ttft = m.ttft.labels(*labels)
        self.tpot = m.tpot.labels(*labels)
        self.duration_ok = m.duration.labels(*labels, "")
        self.with_usage = m.responses.labels(labels[3], "usage")


class _Observed:
    __slots__ = ("summary", "site", "compression", "t0", "status", "scanner", "collector", "first_at", "end_at", "done",
                 "upstream", "first_chunk_at", "chunk_at", "chunk_gaps", "head")

    def __init__(self) -> None:
        self.summary: RequestSummary | None = None
        self.site = ""
        self.compression: tuple[int, int] | None = None
        self.t0 = time.monotonic()
        self.status = ""
        self.scanner: SseUsageScanner | None = None
        self.collector: BodyCollector | None = None
        self.first_at: float | None = None
        self.end_at: float | None = None
        self.done = False
        self.upstream = ""
        self.first_chunk_at: float | None = None
        self.chunk_at: float | None = None
        self.chunk_gaps: list[float] = []
        self.head: bytes | None = None  # a Responses API response's first bytes, until its id is found


_EXT_PROC_ATTRIBUTES = "envoy.filters.http.ext_proc"


def upstream_address(req: ep.ProcessingRequest) -> str:
    """host:port of the upstream Envoy connected to, when the filter was configured to send it."""
    attrs = req.attributes.get(_EXT_PROC_ATTRIBUTES)
    if attrs is None:
        return ""
    v = attrs.fields.get(UPSTREAM_ATTRIBUTE)
    return v.string_value if v is not None else ""
