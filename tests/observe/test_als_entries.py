"""Access log entries → the response record: usage from the Lua filter's metadata, Envoy's timers, the
routing filter's headers; entries the gateway did not route, or with odd metadata, count nothing."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2 as al
from prometheus_client import CollectorRegistry

from extproc.gateway.config.observability import ObservabilitySettings
from extproc.gateway.observe.request import RequestSummary
from extproc.gateway.observe.als import AccessLogReceiver, entry_usage
from extproc.gateway.observe.observer import ResponseObserver


def _entry(summary: RequestSummary | None, prompt=None, completion=None, status=200, site="edge") -> al.HTTPAccessLogEntry:  # type: ignore[no-untyped-def]
    e = al.HTTPAccessLogEntry()
    if summary is not None:
        e.request.request_headers["x-aigrid-obs"] = summary.encode()
    e.request.request_headers["x-aigrid-site"] = site
    e.response.response_code.value = status
    e.common_properties.time_to_first_upstream_rx_byte.FromMilliseconds(120)
    e.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(900)
    fields = {}
    if prompt is not None:
        fields["prompt_tokens"] = prompt
    if completion is not None:
        fields["completion_tokens"] = completion
    if fields:
        e.common_properties.metadata.filter_metadata["aigrid.usage"].update(fields)
    return e


def _value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value for m in reg.collect() for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_entries_become_usage_and_timings():
    reg = CollectorRegistry()
    rx = AccessLogReceiver(ResponseObserver(ObservabilitySettings(usage=True), reg, ["edge"]))
    stream = RequestSummary(model="m", sla="realtime", operation="chat", stream=True)
    rx.on_entry(_entry(stream, 30, 11))
    rx.on_entry(_entry(RequestSummary(model="m", sla="batch", operation="chat"), 7, 3))
    rx.on_entry(_entry(None, 99, 99))  # not routed by the gateway: ignored
    rx.on_entry(_entry(stream, 5, None))  # half a usage: none
    rx.on_entry(_entry(stream, status=503))
    assert _value(reg, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", site="edge") == 37
    assert _value(reg, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 14
    assert _value(reg, "gen_ai_server_time_to_first_token_seconds_count") == 2  # streams only, 2xx only
    assert _value(reg, "gen_ai_server_time_to_first_token_seconds_sum") == 0.24
    assert _value(reg, "gen_ai_server_time_per_output_token_seconds_sum") == (0.9 - 0.12) / 10
    assert _value(reg, "aigrid_responses_total", outcome="usage") == 2
    assert _value(reg, "aigrid_responses_total", outcome="no_usage") == 1
    assert _value(reg, "aigrid_responses_total", outcome="error") == 1
    assert _value(reg, "gen_ai_server_request_duration_seconds_count", error_type="503") == 1


def test_odd_metadata_is_no_usage():
    for p, c in ((-1, 2), (1.5, 2), (3, -4)):
        assert entry_usage(_entry(None, p, c).common_properties) is None
    assert entry_usage(_entry(None).common_properties) is None
