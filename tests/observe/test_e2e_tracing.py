"""Optional OTLP traces: one span per decision, exported over real OTLP/HTTP to a receiver in the test;
the client's W3C trace context is the span's parent, and the site receives a traceparent naming it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from harness import chat_body, wait_until  # noqa: E402
from simstack import wait_envoy_ready  # noqa: E402
from extproc.tools.stack.procs import free_port  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class _Receiver(BaseHTTPRequestHandler):
    spans: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                _Receiver.spans.extend(ss.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


def test_one_span_per_decision_with_the_clients_parent(stack_factory):
    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        st = stack_factory()
        gw = st.add_gateway(extra={"observability": {"otlp_traces_endpoint": f"http://127.0.0.1:{port}/v1/traces"}})
        wait_envoy_ready(gw)
        st.publish_idle(gw)
        r = gw.post("/v1/chat/completions", chat_body("hello"), headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
        assert r.status == 200
        wait_until(lambda: any(s.trace_id.hex() == TRACE_ID for s in _Receiver.spans), 15, "the decision span exported")
        span = next(s for s in _Receiver.spans if s.trace_id.hex() == TRACE_ID)
        attrs = {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}
        assert span.name == "aigrid.route" and span.parent_span_id.hex() == PARENT
        assert attrs["aigrid.site"] == "edge" and attrs["gen_ai.request.model"] == "m"
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        # The site sees the same trace, with the gateway's span as its parent.
        upstream = st.records("edge")[-1]["headers"]["traceparent"]
        assert upstream == f"00-{TRACE_ID}-{span.span_id.hex()}-01"
    finally:
        srv.shutdown()
