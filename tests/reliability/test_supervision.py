"""Supervision: the restart backoff (pure), restarts of a real child, and no orphans when the supervisor
itself is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from extproc.tools.stack.procs import ProcessGroup, RestartPolicy, free_port, port_is_free, python_argv, restart_plan
from harness import http, wait_until
from proctree import alive, descendants  # type: ignore[import-not-found]

P = RestartPolicy(base_s=0.5, factor=2.0, max_s=4.0, stable_s=10.0)


@pytest.mark.parametrize(
    ("failures", "ran_s", "delay", "after"),
    [
        (0, 0.1, 0.5, 1),  # first exit: base delay
        (1, 0.1, 1.0, 2),  # quick again: doubled
        (2, 0.1, 2.0, 3),
        (3, 9.99, 4.0, 4),  # just under stable: still crash-looping
        (4, 0.1, 4.0, 5),  # capped at max_s
        (30, 0.1, 4.0, 31),  # stays capped, no overflow
        (7, 10.0, 0.5, 1),  # ran stable_s: back to base
        (0, 500.0, 0.5, 1),
    ],
)
def test_restart_plan(failures: int, ran_s: float, delay: float, after: int) -> None:
    assert restart_plan(P, failures, ran_s) == (delay, after)


def test_restart_plan_delay_never_decreases_while_crash_looping() -> None:
    n, last = 0, 0.0
    for _ in range(20):
        d, n = restart_plan(P, n, 0.0)
        assert last <= d <= P.max_s
        last = d


def test_supervise_restarts_an_exited_child_and_leaves_others_alone(tmp_path) -> None:
    g = ProcessGroup(tmp_path / "logs", policy=RestartPolicy(base_s=0.05, stable_s=30))
    with g:
        keep = g.start("keeper", python_argv("-c", "import time; time.sleep(120)"), restart=True)
        once = g.start("oneshot", python_argv("-c", "print('hi')"), restart=False)
        crash = g.start("crasher", python_argv("-c", "import time; time.sleep(120)"), restart=True)
        first_pid = crash.pid
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: (g.supervise(), crash.restarts == 1 and crash.alive())[1], 10, "restart")
        assert crash.pid != first_pid
        assert keep.alive() and keep.restarts == 0
        wait_until(lambda: not once.alive(), 10, "oneshot exits")
        g.supervise()
        assert once.restarts == 0 and not once.alive()  # not restartable: left as it is
        assert any("crasher exited with code -9" in e for e in g.events)
        assert any("crasher restarted (restart 1" in e for e in g.events)
        # A crash loop backs off: the second quick exit waits twice as long as the first.
        os.kill(crash.pid, signal.SIGKILL)
        wait_until(lambda: not crash.alive(), 5, "second crash")
        g.supervise()
        assert "restarting in 0.1s" in g.events[-1]


@pytest.mark.slow
def test_sigkill_of_aigrid_up_leaves_no_child_and_no_port(tmp_path) -> None:
    """`aigrid up` with simulated sites (redis-server, 2 sims, 2 agents, serve, envoy), then SIGKILL of the
    supervisor: the kernel kills every child (PR_SET_PDEATHSIG); nothing keeps a port."""
    port, admin = free_port(), free_port()
    workdir = tmp_path / "up"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sup = subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "up", "--upstream", "sim", "--port", str(port), "--admin-port",
         str(admin), "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        lines = []
        for line in sup.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "AI Grid is up" in line or "aigrid up:" in line:
                break
        assert any("AI Grid is up" in x for x in lines), "".join(lines)
        assert http("GET", f"http://127.0.0.1:{port}/health").status in (200, 404)
        before = descendants(sup.pid)
        kinds = {k for k in ("redis-server", "envoy", " serve ", " sim ", " agent ") if any(k in x for x in before.values())}
        assert kinds == {"redis-server", "envoy", " serve ", " sim ", " agent "}, before
        cfg = (workdir / "aigrid.yaml").read_text()
        internal = [int(x.rsplit(":", 1)[1].split("/")[0].strip("\"'")) for x in cfg.split() if x.startswith(("127.0.0.1:", "redis://127.0.0.1:", "'127.0.0.1:"))]
        assert internal
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(10)
        wait_until(lambda: alive(before) == [], 15, "every child of the killed supervisor to exit")
        for p in (port, admin, *internal):
            wait_until(lambda p=p: port_is_free(p), 10, f"port {p} free")
    finally:
        if sup.poll() is None:
            sup.kill()
        sup.wait(10)
