"""A held request through real Envoy: the processor extends Envoy's message timeout before it waits
(override_message_timeout, within max_message_timeout), so a hold longer than message_timeout ends in
the upstream answer, not Envoy's failure path; and without the extension the gateway never holds past
what the timeout leaves."""

from __future__ import annotations

import time

import pytest
from harness import chat_body

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
SPEED = {"speed": {"prefill_tokens_per_s": 31334, "decode_ms": 6.37, "decode_ms_per_seq": 0.104}}


def _holding(envoy: dict) -> dict:
    """A cost-model profile whose picker holds every batch request (any predicted TPOT leaves less than
    all of the realtime bound): 100 ms at a time, 1.2 s at most, then routes it."""
    return {
        "routing": {"profile": "hold_batch", "profiles": {"hold_batch": {
            "filters": ["not_drained", "not_unhealthy", "known_load"],
            "estimators": ["ttft_link", "ttft_queue", "ttft_prefill", "tpot_decode", "tpot_prefill_stall"],
            "picker": {"type": "slo_slack", "params": {"hold_tpot_slack": 1.0, "hold_step_ms": 100, "hold_max_ms": 1200}},
        }}},
        "envoy": envoy,
    }


def test_a_hold_longer_than_envoys_message_timeout_ends_upstream(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(extra=_holding({"message_timeout_ms": 300, "max_message_timeout_ms": 4000}),
                        site_overrides={"edge": SPEED, "remote": SPEED})
    st.publish_idle(gw)
    t0 = time.monotonic()
    r = gw.post(CHAT, chat_body("summarise the attached quarterly report"), {"x-aigrid-priority": "batch"})
    waited = time.monotonic() - t0
    assert r.status == 200
    assert waited >= 1.2  # held 12 x 100 ms, four times Envoy's 300 ms message timeout
    assert gw.metric("aigrid_holds_total", 'sla="batch"') == 12.0
    assert gw.metric("aigrid_hold_seconds_count") == 1.0
    recs = st.records("edge") + st.records("remote")
    assert len(recs) == 1  # reached a site once, after the hold
    stats = gw.stats()
    timeouts = {k: v for k, v in stats.items() if "ext_proc" in k and k.endswith(("message_timeouts", "streams_failed"))}
    assert timeouts and not any(timeouts.values()), timeouts
    # Realtime work is never held.
    t0 = time.monotonic()
    assert gw.post(CHAT, chat_body("quick"), {"x-aigrid-priority": "realtime"}).status == 200
    assert time.monotonic() - t0 < 1.0
    assert gw.metric("aigrid_holds_total", 'sla="realtime"') is None


def test_without_the_extension_the_gateway_does_not_hold_past_the_message_timeout(stack_factory):
    st = stack_factory()
    # 600 ms of message timeout, nothing to extend it with: a hold budget of 100 ms (what is left after
    # the half second of margin), so the batch request waits one 100 ms step, is decided again (a second
    # hold decision, not waited) and then routed with holding off, inside Envoy's timeout.
    gw = st.add_gateway(extra=_holding({"message_timeout_ms": 600, "max_message_timeout_ms": 0}),
                        site_overrides={"edge": SPEED, "remote": SPEED})
    st.publish_idle(gw)
    r = gw.post(CHAT, chat_body("summarise the attached quarterly report"), {"x-aigrid-priority": "batch"})
    assert r.status == 200
    assert gw.metric("aigrid_holds_total", 'sla="batch"') == 2.0
    assert len(st.records("edge") + st.records("remote")) == 1
    timeouts = {k: v for k, v in gw.stats().items() if "ext_proc" in k and k.endswith("message_timeouts")}
    assert timeouts and not any(timeouts.values()), timeouts
