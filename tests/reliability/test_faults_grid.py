"""Faults of the grid's other parts under steady open-loop load through Envoy, on simulated GPU sites with
their agents (the `aigrid up` grid): Redis down, an agent killed, a site killed and restarted, the remote
link slowed."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from faultkit import outage, run_fault  # type: ignore[import-not-found]
from harness import chat_body, http, wait_until

pytestmark = pytest.mark.slow


def BODY(seq: int) -> bytes:  # noqa: N802
    # A distinct prompt per request: no conversation affinity pins the traffic to one site.
    return chat_body(f"Request {seq} at {time.time():.3f}: summarise the link budget of a long-haul optical span.",
                     model="llama-3.1-8b", max_tokens=16)


def _admin_stat(st, name: str) -> int:  # type: ignore[no-untyped-def]
    doc = json.loads(http("GET", f"http://127.0.0.1:{st.admin_port}/stats?format=json&filter={name}").body)
    return sum(int(s.get("value", 0)) for s in doc["stats"] if s["name"] == name)


def _sites_fresh(st) -> bool:  # type: ignore[no-untyped-def]
    text = http("GET", f"http://127.0.0.1:{st.metrics_port}/metrics").body.decode()
    vals = [float(x.split()[-1]) for x in text.splitlines() if x.startswith("aigrid_site_pressure{")]
    return len(vals) == 2 and all(v >= 0 for v in vals)


def _settle(st) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: (st.supervise(), _sites_fresh(st))[1], 20, "both sites reporting fresh load")


def test_redis_down_4s_then_back(sim_grid) -> None:
    st = sim_grid
    _settle(st)
    run = run_fault(st, "Redis killed, down 4 s, restarted", outage(st, "redis", 4.0), rate=10, body=BODY,
                    before_s=1.5, after_s=3)
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0 and run.summary.unrouted == 0
    _settle(st)  # agents republish, the gateway reconnects: the map is whole again


def test_agent_killed(sim_grid) -> None:
    st = sim_grid
    _settle(st)
    agent = st.process("agent-remote")
    run = run_fault(st, "agent SIGKILL (supervisor restarts it)", agent.kill, rate=10, body=BODY, before_s=1.5, after_s=4)
    assert agent.alive() and agent.restarts >= 1
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0 and run.summary.unrouted == 0


def test_site_killed_and_restarted(sim_grid) -> None:
    """The remote site (home of this grid's traffic) is killed: only requests in flight on it may fail;
    new ones go to the edge (connect failure → next priority), and come back once it is up."""
    st = sim_grid
    _settle(st)
    in_flight: list[int] = []
    killed_at: list[float] = []

    def kill_remote() -> None:
        in_flight.append(_admin_stat(st, "cluster.site_remote.upstream_rq_active"))
        st.process("site-remote").kill()
        killed_at.append(time.time())  # the process is gone (kill() waited for it)

    run = run_fault(st, "site SIGKILL (supervisor restarts it)", kill_remote, rate=10, body=BODY, before_s=1.5, after_s=6)
    # In flight on it = sent before it was gone, still unanswered when the kill began.
    cut = [o for o in run.outcomes if o.start <= killed_at[0] and o.end >= run.fault_at]
    failed = [o for o in run.outcomes if not o.ok]
    print(f"in flight at the kill: {len(cut)} (client side; Envoy's upstream_rq_active on the site just before: {in_flight[0]}); "
          f"failed: {len(failed)}, of which started after the site was gone: {sum(o.start > killed_at[0] for o in failed)}")
    # Every request sent after the kill is served elsewhere (connect failure → next priority). This
    # caught Envoy's default of 3 concurrent retries on the aggregate cluster refusing failover (503 UO).
    late = [o for o in failed if o.start > killed_at[0]]
    assert late == [], late
    assert len(failed) <= len(cut)
    assert st.process("site-remote").alive()
    served_after = [a for a in run.access if a.start > run.fault_at + 0.5 and a.status == 200]
    assert served_after, "requests were served after the kill"


def test_remote_link_slowed_moves_realtime_to_edge(sim_grid) -> None:
    """Realtime requests go to the lowest-RTT site with headroom: the remote one over its fast link at
    first (the edge is 5 ms away one way, here). The link then slows to 40 ms one way: the gateway's RTT
    probe sees it and realtime traffic moves to the edge."""
    st = sim_grid
    _settle(st)
    link = f"http://127.0.0.1:{st.site_ports['remote']}/sim/link"

    def slow() -> None:
        req = urllib.request.Request(link, data=b'{"delay_ms": 40}', method="POST", headers={"content-type": "application/json"})
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["delay_ms"] == 40  # noqa: S310

    try:
        run = run_fault(st, "remote link 0 → 40 ms one way", slow, rate=10, body=BODY,
                        headers={"x-aigrid-priority": "realtime"}, before_s=2.5, after_s=6.5)
    finally:
        req = urllib.request.Request(link, data=b'{"delay_ms": 0}', method="POST")
        urllib.request.urlopen(req, timeout=5).read()  # noqa: S310
    before = [a.site for a in run.access if a.start < run.fault_at]
    after = [a.site for a in run.access if a.start > run.fault_at + 4]
    moved = [a.start for a in run.access if a.start > run.fault_at and a.site == "edge"]
    print(f"realtime before: {before.count('remote')}/{len(before)} remote; last 4 s: {after.count('edge')}/{len(after)} edge; "
          f"first at edge {moved[0] - run.fault_at:.2f}s after the slow-down" if moved else "never moved")
    assert run.summary.errors == 0
    assert before.count("remote") > 0.8 * len(before)
    assert after and after.count("edge") > 0.8 * len(after)


def test_extproc_sigkill_with_long_requests_in_flight(sim_grid) -> None:
    """Requests that ext_proc already answered are upstream (a few hundred ms each) when it is killed.
    Envoy keeps their ext_proc streams open until the request ends, so those streams fail too
    (`streams_failed` counts them), but `failure_mode_allow` lets the requests go on: none is cut.
    Requests arriving while it is down fail open to the default route."""
    st = sim_grid
    _settle(st)
    serve = st.serve_proc
    active: list[int] = []

    def kill() -> None:
        active.append(_admin_stat(st, "cluster.site_remote.upstream_rq_active") + _admin_stat(st, "cluster.site_edge.upstream_rq_active"))
        serve.kill()

    before = _admin_stat(st, "http.aigrid.ext_proc.aigrid.streams_failed")
    run = run_fault(st, "ext_proc SIGKILL, long requests in flight", kill, rate=10, body=BODY, before_s=1.5, after_s=4)
    failed_streams = _admin_stat(st, "http.aigrid.ext_proc.aigrid.streams_failed") - before
    print(f"requests upstream at the kill: {active[0]}; ext_proc streams failed: {failed_streams}")
    assert serve.alive() and serve.restarts >= 1
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0
