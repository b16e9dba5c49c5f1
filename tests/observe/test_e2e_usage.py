"""Token usage counted by the gateway equals the simulator's own count, per site, through real Envoy,
`aigrid serve`, Redis and `aigrid sim`: non-stream bodies, streams that asked for usage, and streams that
did not (the gateway asks on their behalf and strips the extra chunk before the client sees it)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from harness import chat_body, wait_until
from simstack import metric_sum, sim_counters, sse_events, wait_envoy_ready

import pytest
from prometheus_client.parser import text_string_to_metric_families


def _kinds(i: int) -> dict:
    k = i % 3
    if k == 0:
        return {"max_tokens": 12 + i}
    if k == 1:
        return {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 12 + i}
    return {"stream": True, "max_tokens": 12 + i}


@pytest.mark.parametrize("via", ["access_log", "ext_proc"])
def test_usage_per_site_equals_the_simulators(sim_stack_factory, via):
    st = sim_stack_factory()
    # least_loaded with in-flight accounting alternates sites between load reports: both get traffic.
    obs = {"usage": True, "usage_via": via, "inject_stream_usage": True}
    gw = st.add_gateway(extra={"observability": obs}, strategy="least_loaded")
    wait_envoy_ready(gw)
    st.publish_idle(gw)
    before = {s: sim_counters(st, s) for s in st.sites}

    def one(i: int):
        extra = _kinds(i)
        r = gw.post("/v1/chat/completions", chat_body(f"question number {i} " * (1 + i % 5), model="meta-llama/Llama-3.1-8B-Instruct", **extra))
        return i, extra, r

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(18)))

    client_usage = 0
    said_models: set[str] = set()  # the `model` the responses themselves named
    expected_chunk_gaps = 0  # per stream: the upstream's events (the client's, plus a stripped usage chunk) - 1
    for i, extra, r in results:
        assert r.status == 200, (i, r.status, r.body[:200])
        if not extra.get("stream"):
            client_usage += 1
            assert json.loads(r.body)["usage"]["completion_tokens"] >= 1
            said_models.add(json.loads(r.body)["model"])
            continue
        events = sse_events(r.body)
        assert events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        said_models.update(c["model"] for c in chunks)
        expected_chunk_gaps += len(chunks) + (0 if "stream_options" in extra else 1) - 1
        with_usage = [c for c in chunks if c.get("usage")]
        if "stream_options" in extra:
            # The client asked: its usage chunk is still there, exactly once, last before [DONE].
            assert len(with_usage) == 1 and chunks[-1] is with_usage[0] and chunks[-1]["choices"] == []
            client_usage += 1
        else:
            # It did not ask: what it gets has no usage chunk, only its content chunks.
            assert with_usage == [] and all(c["choices"] for c in chunks)

    def gateway_counts() -> dict[str, tuple[int, int]]:
        text = gw.metrics()
        return {
            s: (
                int(metric_sum(text, "gen_ai_client_token_usage_sum", site=s, gen_ai_token_type="input")),
                int(metric_sum(text, "gen_ai_client_token_usage_sum", site=s, gen_ai_token_type="output")),
            )
            for s in st.sites
        }

    def sim_deltas() -> dict[str, tuple[int, int]]:
        out = {}
        for s in st.sites:
            p, g = sim_counters(st, s)
            out[s] = (p - before[s][0], g - before[s][1])
        return out

    try:
        wait_until(lambda: gateway_counts() == sim_deltas(), 10, "gateway usage == simulator usage per site")
    except AssertionError:
        raise AssertionError(f"gateway {gateway_counts()} != simulator {sim_deltas()}") from None
    counts = gateway_counts()
    assert all(c[0] > 0 and c[1] > 0 for c in counts.values()), counts  # both sites served traffic
    text = gw.metrics()
    assert metric_sum(text, "aigrid_responses_total", outcome="usage") == 18
    assert metric_sum(text, "aigrid_usage_requested_total") == 6
    assert metric_sum(text, "aigrid_usage_chunks_stripped_total") == 6
    assert metric_sum(text, "gen_ai_server_time_to_first_token_seconds_count") == 12
    assert client_usage == 12

    # The conventions' client names: gen_ai.response.model is what the responses said, server.address /
    # server.port the site endpoint that answered, one operation duration per request, one first chunk
    # per stream, and (ext_proc: the observer sees every chunk) one gap per chunk after a stream's first.
    series = [s for f in text_string_to_metric_families(text) for s in f.samples]
    usage_series = [s for s in series if s.name == "gen_ai_client_token_usage_count"]
    assert {s.labels["gen_ai_response_model"] for s in usage_series} == said_models, said_models
    for s in usage_series:
        assert (s.labels["server_address"], s.labels["server_port"]) == ("127.0.0.1", str(st.sites[s.labels["site"]])), s.labels
    assert metric_sum(text, "gen_ai_client_operation_duration_seconds_count") == 18
    assert metric_sum(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 12
    gaps = metric_sum(text, "gen_ai_client_operation_time_per_output_chunk_seconds_count")
    assert gaps == (expected_chunk_gaps if via == "ext_proc" else 0), (gaps, expected_chunk_gaps)
    # The deprecated aliases still count the same requests, under their old labels.
    assert metric_sum(text, "gen_ai_server_request_duration_seconds_count") == 18
    assert not [s for s in series if s.name.startswith("gen_ai_server_") and "gen_ai_response_model" in s.labels]
