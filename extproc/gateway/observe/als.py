"""Envoy's gRPC access log stream (AccessLogService) as the response side's input, for
`observability.usage_via: access_log`.

Envoy sends one entry per finished request, batched into few messages; the Lua filter has put the
response's usage into dynamic metadata (`aigrid.usage`), and Envoy's own timers give TTFT and duration.
The gateway never sees a response chunk: that is the point.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from extproc.gateway.observe.observer import ResponseObserver
from extproc.gateway.observe.request import USAGE_NAMESPACE as NAMESPACE
from extproc.gateway.observe.request import compression_estimate, decode_summary
from extproc.gateway.observe.usage import Usage, valid_response_id
from extproc.wire.contract import COMPRESSION_HEADER, OBS_HEADER, SITE_HEADER

log = logging.getLogger(__name__)

# Request headers the access log must carry (rendered into additional_request_headers_to_log).
LOGGED_REQUEST_HEADERS = (OBS_HEADER, SITE_HEADER, COMPRESSION_HEADER)


def _seconds(d) -> float | None:  # google.protobuf.Duration, unset when Envoy never got there
    if d.seconds == 0 and d.nanos == 0:
        return None
    return d.seconds + d.nanos / 1e9


def entry_usage(common: al.AccessLogCommon) -> Usage | None:
    md = common.metadata.filter_metadata.get(NAMESPACE)
    if md is None:
        return None
    p, c = md.fields.get("prompt_tokens"), md.fields.get("completion_tokens")
    if p is None or c is None:
        return None
    pv, cv = p.number_value, c.number_value
    if pv < 0 or cv < 0 or pv != int(pv) or cv != int(cv):
        return None
    m = md.fields.get("model")
    return Usage(int(pv), int(cv), model=m.string_value if m is not None else "")


def entry_upstream(common: al.AccessLogCommon) -> str:
    """host:port of the upstream Envoy connected to, "" when it never connected."""
    if not common.HasField("upstream_remote_address"):
        return ""
    sa = common.upstream_remote_address.socket_address
    return f"{sa.address}:{sa.port_value}" if sa.address else ""


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, observer: ResponseObserver) -> None:
        self.observer = observer

    async def StreamAccessLogs(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context
    ) -> als_pb2.StreamAccessLogsResponse:
        async for msg in request_iterator:
            for e in msg.http_logs.log_entry:
                try:
                    self.on_entry(e)
                except Exception:  # one odd entry must not end the stream
                    log.exception("access log entry not understood")
        return als_pb2.StreamAccessLogsResponse()

    def on_entry(self, e: al.HTTPAccessLogEntry) -> None:
        h = e.request.request_headers
        summary = decode_summary(h.get(OBS_HEADER))
        if summary is None:
            return  # not an inference request the gateway routed
        c = e.common_properties
        md = c.metadata.filter_metadata.get(NAMESPACE)
        if md is not None and "stripped" in md.fields:
            self.observer.metrics.stripped.inc(int(md.fields["stripped"].number_value))
        status = str(e.response.response_code.value) if e.response.HasField("response_code") else ""
        learn = self.observer.on_response_id
        if summary.conversation and learn is not None and md is not None and status.startswith("2"):
            rid = md.fields.get("response_id")
            if rid is not None and valid_response_id(rid.string_value):
                learn(rid.string_value, summary.conversation)
        first = _seconds(c.time_to_first_upstream_rx_byte)
        last = _seconds(c.time_to_last_downstream_tx_byte)
        duration = last if last is not None else (_seconds(c.duration) or 0.0)
        self.observer.record(
            summary, h.get(SITE_HEADER, ""), status, entry_usage(c), duration,
            ttft_s=first if summary.stream else None,
            last_s=(duration - first) if first is not None else None,
            compression=compression_estimate(h.get(COMPRESSION_HEADER)),
            aborted=not status or status == "0",
            upstream=entry_upstream(c),
        )
