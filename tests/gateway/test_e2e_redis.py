"""Redis goes away and comes back: the gateway serves on its last snapshot, then treats it as stale,
and recovers on its own."""

from __future__ import annotations

import pytest
from harness import chat_body, wait_pressure, wait_until

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


def test_redis_down_then_back(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(stale_after_s=2.0, default_site="remote")
    st.publish_load("edge", kv=0.05, ttl_ms=60_000)
    st.publish_load("remote", kv=0.05, ttl_ms=60_000)
    wait_pressure(gw, "edge", lambda p: p < 0.1)
    assert gw.post(CHAT, chat_body("before")).headers["x-served-by"] == "edge"

    st.redis_proc.kill()
    wait_until(lambda: gw.metric("aigrid_loadmap_connected") == 0.0, 10, "gateway notices Redis is gone")
    # Last snapshot still fresh: routing still follows it (edge, the lowest-RTT site).
    assert gw.post(CHAT, chat_body("redis down, snapshot fresh")).headers["x-served-by"] == "edge"
    # Once it is older than stale_after_s, the load is unknown: the configured default site.
    wait_until(lambda: gw.post(CHAT, chat_body("stale")).headers["x-served-by"] == "remote", 10, "stale snapshot → default site")
    assert gw.serve.alive()

    st.start_redis()  # same port, empty
    wait_until(lambda: gw.metric("aigrid_loadmap_connected") == 1.0, 15, "gateway reconnects by itself")
    st.publish_load("edge", kv=0.05)
    st.publish_load("remote", kv=0.05)
    wait_until(lambda: gw.post(CHAT, chat_body("after")).headers["x-served-by"] == "edge", 10, "routing on fresh data again")


def test_foreign_and_bad_keys_do_not_poison_the_map(stack_factory):
    st = stack_factory()
    gw = st.add_gateway()
    c = st.redis()
    # Something else writes under our prefix, and garbage arrives on the channel.
    c.set("aigrid:report:edge:n9", b"not a protobuf at all")
    c.set("aigrid:report:remote:zz", b"\x08\x02\x12\x06remote")  # schema_version 2
    c.publish("aigrid:reports", b"\x00\x01garbage")
    st.publish_load("edge", kv=0.95, waiting=40)
    st.publish_load("remote", kv=0.05)
    wait_pressure(gw, "edge", lambda p: p > 0.9)
    wait_until(lambda: (gw.metric("aigrid_loadmap_reports_rejected_total") or 0) >= 2, 10, "rejections counted")
    assert gw.serve.alive()
    c.close()
