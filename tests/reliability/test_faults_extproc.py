"""ext_proc failures under load: SIGKILL (the supervisor restarts it) and a rolling restart."""

from __future__ import annotations

import pytest

from faultkit import run_fault  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow


def test_extproc_sigkill_then_restart_loses_no_request(grid) -> None:
    st = grid()
    old = st.serve_proc
    run = run_fault(st, "ext_proc SIGKILL", old.kill, before_s=1.5, after_s=4)
    assert old.restarts == 1 and old.alive()  # the supervisor brought it back
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0
    # While it was down Envoy failed open (default route): those requests were served, just unrouted,
    # and the access log saw every request.
    assert run.summary.ok == run.summary.sent == sum(run.summary.by_cluster.values())
    assert run.summary.unrouted > 0 and run.recovery_s > 0


def test_extproc_rolling_restart_loses_and_unroutes_no_request(grid) -> None:
    st = grid()
    old = st.serve_proc
    run = run_fault(st, "ext_proc rolling restart", st.rolling_restart_serve, before_s=1.5, after_s=6)
    assert not old.alive() and st.serve_proc is not old and st.serve_proc.alive()
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0
    # The handover is seamless: every request was routed by one ext_proc or the other.
    assert sum(run.summary.by_cluster.values()) == run.summary.sent
    assert run.summary.unrouted == 0, run.row()
