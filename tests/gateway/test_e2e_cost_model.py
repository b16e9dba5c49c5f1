"""The cost-model profile end to end: real Envoy, real Redis, `aigrid serve`, recording stand-in sites. The
decision header names the term that decided; the metrics count it; a site without a speed says so."""

from __future__ import annotations

import pytest
from harness import chat_body

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
# One replica's speeds as an operator's benchmark gives them: the edge an L40S, the remote two H100s.
EDGE = {"speed": {"prefill_tokens_per_s": 10657, "decode_ms": 21.8, "decode_ms_per_seq": 0.376, "kv_cache_tokens": 195616}}
REMOTE = {"replicas": 2,
          "speed": {"prefill_tokens_per_s": 31334, "decode_ms": 6.37, "decode_ms_per_seq": 0.104, "kv_cache_tokens": 415344}}


def _last(st, site: str) -> dict:
    recs = st.records(site)
    assert recs, f"nothing reached {site}"
    return {k.lower(): v for k, v in recs[-1]["headers"].items()}


def test_cost_model_through_envoy_names_its_deciding_term(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(extra={"routing": {"profile": "aigrid"}}, site_overrides={"edge": EDGE, "remote": REMOTE})
    st.publish_idle(gw)
    # A long standard prompt (~4,000 tokens): the edge L40S would take ~375 ms to prefill it, the remote
    # H100 ~130 ms, and the edge is kept for realtime work anyway.
    long_prompt = " ".join(f"Paragraph {i}: the quarterly figures for the region were revised." for i in range(250))
    assert gw.post(CHAT, chat_body(long_prompt)).status == 200
    h = _last(st, "remote")
    assert h["x-aigrid-site"] == "remote"
    assert h["x-aigrid-decision"].startswith("slo most slack remote") and "decided over edge" in h["x-aigrid-decision"]
    # A short realtime turn: the nearest site with slack, the edge.
    st.clear_records()
    assert gw.post(CHAT, chat_body("quick question"), {"x-aigrid-priority": "realtime"}).status == 200
    h = _last(st, "edge")
    assert h["x-aigrid-decision"].startswith("slo nearest with slack edge")
    text = gw.metrics()
    assert 'aigrid_cost_model_decided_by_total{term="' in text
    assert gw.metric("aigrid_decision_reasons_total", 'reason_class="slo_nearest",site="edge",step="slo_slack"') == 1.0
    assert "aigrid_cost_model_default_speed_total{" not in text  # every site has its speed


def test_a_site_without_a_speed_falls_back_to_the_default_and_says_so(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(extra={"routing": {"profile": "aigrid"}}, site_overrides={"edge": EDGE})
    st.publish_idle(gw)
    for i in range(3):
        assert gw.post(CHAT, chat_body(f"hello {i}")).status == 200
    site = "edge" if st.records("edge") else "remote"
    assert "default speed for remote" in _last(st, site)["x-aigrid-decision"]
    assert gw.metric("aigrid_cost_model_default_speed_total", 'site="remote"') == 3.0
