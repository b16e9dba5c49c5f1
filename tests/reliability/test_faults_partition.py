"""Redis partitioned from one of two gateways (a black hole, not a refused port), under open-loop load on
both: the cut-off gateway serves from its last map, then from the default site once the map is stale;
the other keeps following the live map; no client sees an error; the cut-off one reconnects on heal."""

from __future__ import annotations

import threading
import time

import pytest

from faultkit import read_all_access  # type: ignore[import-not-found]
from extproc.tools.stack.openloop import OpenLoop, summarize
from extproc.tools.stack.procs import free_port
from harness import chat_body, wait_until
from tcpproxy import PartitionableProxy  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow


def test_redis_partitioned_from_one_of_two_gateways(stack_factory) -> None:
    st = stack_factory()
    proxy = PartitionableProxy(st.redis_port, free_port()).start()
    try:
        log = {"envoy": {"access_log": True}}
        a = st.add_gateway(log)
        b = st.add_gateway({**log, "redis": {"url": f"redis://127.0.0.1:{proxy.listen_port}/0", "connect_timeout_s": 0.5}})
        stop = threading.Event()

        def agents() -> None:  # the sites keep reporting: edge busy, remote idle
            while not stop.wait(0.3):
                st.publish_load("edge", kv=0.95, running=60)
                st.publish_load("remote", kv=0.05)

        reporter = threading.Thread(target=agents, daemon=True)
        reporter.start()
        for gw in (a, b):
            wait_until(lambda gw=gw: (gw.metric("aigrid_site_pressure", 'site="edge"') or 0) > 0.9, 10, f"{gw.name} sees edge busy")
        body = lambda seq: chat_body(f"partition request {seq} {time.time()}")  # noqa: E731
        t0 = time.time()
        loads = [OpenLoop(gw.url("/v1/chat/completions"), body, 10).start() for gw in (a, b)]
        time.sleep(2)
        proxy.partition()
        cut_at = time.time()
        wait_until(lambda: b.metric("aigrid_loadmap_connected") == 0, 15, "b notices the partition")
        noticed = time.time() - cut_at
        time.sleep(4)  # with the ~2.6 s to notice: beyond stale_after_s (3 s), b's map has gone stale
        proxy.heal()
        healed_at = time.time()
        wait_until(lambda: b.metric("aigrid_loadmap_connected") == 1, 20, "b reconnects")
        reconnected = time.time() - healed_at
        time.sleep(1)
        outs = [ld.stop() for ld in loads]
        stop.set()
        acc = [read_all_access(st.group.log_dir / f"envoy-{gw.name}.log", t0, len(o)) for gw, o in zip((a, b), outs)]
        sa, sb = summarize(outs[0], acc[0]), summarize(outs[1], acc[1])
        print(f"\ngateway a (connected): {sa.line()}\ngateway b (partitioned): {sb.line()}\n"
              f"b noticed the partition after {noticed:.2f}s, reconnected {reconnected:.2f}s after heal")
        assert len(acc[0]) == sa.sent and len(acc[1]) == sb.sent  # Envoy logged every request
        assert sa.errors == 0 and sb.errors == 0, (sa.error_kinds, sb.error_kinds)
        assert sa.no_site == 0 and sb.no_site == 0
        # While partitioned and stale, b had no load map: it sent its traffic to the default site (edge),
        # while a kept spilling away from the busy edge.
        stale = [x for x in acc[1] if cut_at + 4.5 < x.start < healed_at]
        assert stale and all(x.site == "edge" for x in stale), [x.site for x in stale]
        a_during = [x for x in acc[0] if cut_at < x.start < healed_at]
        assert sum(x.site == "remote" for x in a_during) > 0.5 * len(a_during)
        assert b.metric("aigrid_loadmap_connected") == 1
    finally:
        proxy.stop()
