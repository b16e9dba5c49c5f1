"""Optional OTLP traces: one span per routing decision (`observability.otlp_traces_endpoint`).

W3C trace context: the client's `traceparent` (if any) is the span's parent, and the request goes
upstream with a `traceparent` naming the gateway's span, so the site's own spans hang under it. With
tracing off, `traceparent` passes through Envoy untouched. Needs the `otel` extra (opentelemetry-sdk and
the OTLP/HTTP exporter); spans are exported in batches from the SDK's own thread, off the request path.
"""

from __future__ import annotations

from collections.abc import Mapping


class TracingUnavailable(RuntimeError):
    pass


TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class DecisionTracer:
    def __init__(self, endpoint: str, service_name: str = "aigrid-gateway", schedule_delay_ms: int = 500) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,  # noqa: PLC0415
            )
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,  # noqa: PLC0415
            )
        except ImportError as exc:
            raise TracingUnavailable(
                "observability.otlp_traces_endpoint is set but opentelemetry-sdk is not installed "
                "(pip install 'aigrid[otel]')"
            ) from exc
        self._trace = trace
        # A private provider: the gateway never touches the process-global one an embedder may own.
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=schedule_delay_ms)
        )
        self.tracer = self.provider.get_tracer("aigrid.gateway")
        self.propagator = TraceContextTextMapPropagator()

    def decision_span(
        self,
        headers: Mapping[str, str],
        attributes: dict[str, str | int | float],
        start_ns: int,
        end_ns: int,
    ) -> str | None:
        """Record the span; returns the `traceparent` the upstream request should carry."""
        carrier = {k: headers[k] for k in TRACE_HEADERS if k in headers}
        parent = self.propagator.extract(carrier)
        span = self.tracer.start_span("aigrid.route", context=parent, start_time=start_ns, attributes=attributes)
        span.end(end_time=end_ns)
        out: dict[str, str] = {}
        self.propagator.inject(out, context=self._trace.set_span_in_context(span))
        return out.get("traceparent")

    def shutdown(self) -> None:
        self.provider.shutdown()
