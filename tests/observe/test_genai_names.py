"""The GenAI client names (gen_ai.client.*), as Envoy AI Gateway and the conventions have them:
gen_ai.response.model from the response itself (not the request), server.address / server.port from the
site endpoint that answered (bounded by config), the chunk timings counted per SSE event as a client
reading the same bytes would see them, and the first release's names kept as aliases. The last test
runs a site with two endpoints through real Envoy, so server.port can only come from Envoy's
`upstream.address` attribute."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2 as al
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from harness import chat_body, wait_until
from simstack import metric_sum, wait_envoy_ready
from extproc.gateway.config.observability import ObservabilitySettings
from extproc.gateway.observe import names
from extproc.gateway.observe.als import AccessLogReceiver
from extproc.gateway.observe.observer import ResponseObserver
from extproc.gateway.observe.request import RequestSummary
from extproc.gateway.observe.usage import SseUsageScanner, Usage, count_events, usage_from_body


def _samples(reg: CollectorRegistry, name: str) -> list:
    return [s for m in reg.collect() for s in m.samples if s.name == name]


def test_response_model_is_the_responses_own():
    u = usage_from_body(b'{"model":"llama-3.1-8b-instruct-2407","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}')
    assert u == Usage(3, 2, 0, "llama-3.1-8b-instruct-2407")
    reg = CollectorRegistry()
    obs = ResponseObserver(ObservabilitySettings(usage=True), reg, ["edge"], endpoints={"edge": ["gpu-a.example:8000"]})
    obs.record(RequestSummary(model="llama", sla="standard", operation="chat"), "edge", "200", u, 0.5,
               ttft_s=None, last_s=None, compression=None)
    (s,) = [s for s in _samples(reg, "gen_ai_client_token_usage_count") if s.labels["gen_ai_token_type"] == "input"]
    assert s.labels["gen_ai_request_model"] == "llama"
    assert s.labels["gen_ai_response_model"] == "llama-3.1-8b-instruct-2407"
    assert (s.labels["server_address"], s.labels["server_port"]) == ("gpu-a.example", "8000")
    (d,) = _samples(reg, "gen_ai_client_operation_duration_seconds_count")
    assert d.value == 1 and d.labels["error_type"] == ""
    # A non-stream response records no chunk timings.
    assert [s.value for s in _samples(reg, "gen_ai_client_operation_time_to_first_chunk_seconds_count")] in ([], [0.0])


def test_server_address_is_bounded_by_config():
    sa = names.ServerAddresses({"one": ["vllm.svc:8000"], "two": ["10.0.0.1:8000", "10.0.0.2:8000"], "dns2": ["a:1", "b:1"]})
    assert sa("one", "10.9.9.9:8000") == ("vllm.svc", "8000")  # one endpoint: it answered, whatever IP it had
    assert sa("two", "10.0.0.2:8000") == ("10.0.0.2", "8000")
    assert sa("two", "10.0.0.3:8000") == ("", "")  # not configured: not a label value
    assert sa("two", "") == ("", "")
    assert sa("dns2", "10.1.1.1:1") == ("", "")
    assert sa("unknown-site", "10.0.0.1:8000") == ("", "")
    assert names.split_host_port("[::1]:8000") == ("::1", "8000")


def test_events_are_counted_as_chunks():
    assert count_events(b"data: {}\n\ndata: {}\n\ndata: [DONE]\n\n") == 2
    assert count_events(b"data: {}\r\n\r\ndata: {}\r\n\r\n") == 2
    sc = SseUsageScanner()
    sc.feed(b"data: {\"a\":1}\n\ndata: {\"a\"")
    assert sc.last_events == 1
    sc.feed(b":2}\n\n")
    assert sc.last_events == 1
    sc.feed(b"data: [DONE]\n\n")
    assert sc.last_events == 0


def test_access_log_path_carries_model_and_upstream():
    reg = CollectorRegistry()
    rx = AccessLogReceiver(ResponseObserver(ObservabilitySettings(usage=True), reg, ["two"],
                                            endpoints={"two": ["10.0.0.1:8000", "10.0.0.2:8000"]}))
    e = al.HTTPAccessLogEntry()
    e.request.request_headers["x-aigrid-obs"] = RequestSummary(model="m", sla="standard", operation="chat", stream=True).encode()
    e.request.request_headers["x-aigrid-site"] = "two"
    e.response.response_code.value = 200
    e.common_properties.time_to_first_upstream_rx_byte.FromMilliseconds(100)
    e.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(400)
    e.common_properties.upstream_remote_address.socket_address.address = "10.0.0.2"
    e.common_properties.upstream_remote_address.socket_address.port_value = 8000
    e.common_properties.metadata.filter_metadata["aigrid.usage"].update(
        {"prompt_tokens": 5, "completion_tokens": 4, "model": "m-2407"})
    rx.on_entry(e)
    (s,) = [s for s in _samples(reg, "gen_ai_client_token_usage_count") if s.labels["gen_ai_token_type"] == "output"]
    assert (s.labels["gen_ai_response_model"], s.labels["server_address"], s.labels["server_port"]) == ("m-2407", "10.0.0.2", "8000")
    (f,) = _samples(reg, "gen_ai_client_operation_time_to_first_chunk_seconds_sum")
    assert f.value == 0.1
    # The alias carries the same measurement under its old name and labels.
    (a,) = _samples(reg, "gen_ai_server_time_to_first_token_seconds_sum")
    assert a.value == 0.1 and "gen_ai_response_model" not in a.labels


def test_every_alias_names_a_client_metric():
    reg = CollectorRegistry()
    ResponseObserver(ObservabilitySettings(usage=True), reg)
    declared = {m.name for m in reg.collect()}
    for old, new in names.DEPRECATED_ALIASES.items():
        assert old in declared and new in declared, (old, new)


def test_a_two_endpoint_site_is_labelled_by_the_endpoint_envoy_used(sim_stack_factory):
    """Site edge has both simulators as endpoints: only Envoy knows which answered each request."""
    st = sim_stack_factory()
    both = [f"127.0.0.1:{st.sites['edge']}", f"127.0.0.1:{st.sites['remote']}"]
    gw = st.add_gateway(extra={"observability": {"usage": True, "usage_via": "ext_proc"}},
                        site_overrides={"edge": {"endpoints": both}}, strategy="default_only")
    wait_envoy_ready(gw)
    for i in range(8):
        body = chat_body(f"which endpoint {i}", model="llama-3.1-8b", stream=True, stream_options={"include_usage": True}, max_tokens=8)
        r = gw.post("/v1/chat/completions", body)
        assert r.status == 200, r.body[:300]
    wait_until(lambda: metric_sum(gw.metrics(), "gen_ai_client_token_usage_count", site="edge", gen_ai_token_type="input") == 8,
               10, "usage of 8 streams counted")
    series = [s for f in text_string_to_metric_families(gw.metrics()) for s in f.samples
              if s.name == "gen_ai_client_token_usage_count" and s.labels["site"] == "edge" and s.value > 0]
    ports = {s.labels["server_port"] for s in series}
    assert ports and ports <= {str(st.sites["edge"]), str(st.sites["remote"])}, [s.labels for s in series]
    assert {s.labels["server_address"] for s in series} == {"127.0.0.1"}
