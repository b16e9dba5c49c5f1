"""Fault injection helpers and fixtures (tests/reliability/conftest.py exposes the fixtures; a module of
its own because every tests folder has a conftest.py, and `from conftest import ...` finds whichever
was imported first). Fault injection under steady open-loop load through the real local grid (`LocalStack`, what `aigrid up`
runs): every client-visible error and every request Envoy failed open on is counted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from extproc.tools.sites import GridSite
from extproc.tools.stack.local import LocalStack
from extproc.tools.stack.openloop import OpenLoop, Summary, read_access_log, recovery_s, summarize
from extproc.tools.stack.procs import RestartPolicy, free_port
from harness import chat_body


@dataclass
class FaultRun:
    name: str
    rate: float
    seconds: float
    summary: Summary
    recovery_s: float
    outcomes: list = field(default_factory=list)
    access: list = field(default_factory=list)
    fault_at: float = 0.0

    def row(self) -> str:
        return f"{self.name}: {self.rate:.0f} req/s for {self.seconds:.0f}s: {self.summary.line()}, recovery {self.recovery_s:.2f}s"


def supervise_for(stack: LocalStack, seconds: float) -> None:
    """Wait while supervising (restarts of exited children happen meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stack.supervise()
        time.sleep(0.05)


def outage(stack: LocalStack, name: str, seconds: float) -> Callable[[], None]:
    """A fault: SIGKILL child `name`, keep it down `seconds` (no restart meanwhile), then start it again."""

    def fault() -> None:
        p = stack.process(name)
        p.restart = False
        p.kill()
        supervise_for(stack, seconds)
        p.start()
        p.restart = True

    return fault


def run_fault(
    stack: LocalStack,
    name: str,
    fault: Callable[[], None],
    *,
    rate: float = 20,
    before_s: float = 2.0,
    after_s: float = 6.0,
    body: bytes | Callable[[int], bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> FaultRun:
    """Load for before_s, the fault, load for after_s while supervising (restarts happen), summary."""
    load = OpenLoop(f"{stack.url}/v1/chat/completions", body or chat_body("ping", max_tokens=4), rate, headers=headers).start()
    t_start = load.started_at
    supervise_for(stack, before_s)
    fault_at = time.time()
    fault()
    supervise_for(stack, after_s)
    outcomes = load.stop()
    access = read_all_access(stack, t_start, len(outcomes))
    run = FaultRun(name, rate, time.time() - t_start, summarize(outcomes, access), recovery_s(fault_at, outcomes, access),
                   outcomes, access, fault_at)
    print("\n" + run.row())
    return run


def read_all_access(stack: LocalStack | Path, since: float, expected: int, timeout: float = 5.0) -> list:
    """Envoy flushes its access log every 500 ms: wait until it holds every request sent."""
    path = stack if isinstance(stack, Path) else stack.workdir / "logs" / "envoy.log"
    deadline = time.monotonic() + timeout
    while True:
        access = read_access_log(path, since=since)
        if len(access) >= expected or time.monotonic() > deadline:
            return access
        time.sleep(0.2)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    made: list[LocalStack] = []

    def make(upstream: str = "standin", sites: tuple[GridSite, ...] | None = None, **overrides: dict) -> LocalStack:
        o = {"envoy": {"access_log": True, "health_check_interval_ms": 500}, "gateway": {"drain_grace_s": 5}}
        for k, v in overrides.items():
            o.setdefault(k, {}).update(v)
        kw = {"sites": sites} if sites else {}
        st = LocalStack(tmp_path / f"grid{len(made)}", envoy_port=free_port(), admin_port=free_port(),
                        upstream=upstream, overrides=o, **kw)
        st.group.policy = RestartPolicy(base_s=0.2, max_s=2.0)
        made.append(st)
        st.__enter__()
        return st

    yield make
    for st in made:
        st.stop()


def _make(root: Path, upstream: str, sites: tuple[GridSite, ...] | None, overrides: dict) -> LocalStack:
    o: dict = {"envoy": {"access_log": True, "health_check_interval_ms": 500}, "gateway": {"drain_grace_s": 5}}
    for k, v in overrides.items():
        o.setdefault(k, {}).update(v)
    kw = {"sites": sites} if sites else {}
    st = LocalStack(root, envoy_port=free_port(), admin_port=free_port(), upstream=upstream, overrides=o, **kw)
    st.group.policy = RestartPolicy(base_s=0.2, max_s=2.0)
    try:
        st.start()
    except BaseException:
        st.stop()
        raise
    return st


# The link-delay scenario needs the remote site to start out closer than the edge (see its test).
SIM_SITES = (
    GridSite(name="edge", role="edge", gpu="L40S", replicas=1, link_delay_ms=5.0, rtt_ms=10.0, running_capacity=8),
    GridSite(name="remote", role="remote", gpu="H100", replicas=2, link_delay_ms=0.0, rtt_ms=1.0, running_capacity=48),
)


@pytest.fixture(scope="module")
def sim_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Simulated GPU sites with their agents, Redis, ext_proc and Envoy: shared by a module's scenarios,
    each of which leaves it healthy again."""
    st = _make(tmp_path_factory.mktemp("simgrid"), "sim", SIM_SITES, {"gateway": {"rtt_probe_interval_s": 0.5}})
    yield st
    st.stop()
