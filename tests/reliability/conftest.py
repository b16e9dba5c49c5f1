"""Fault injection under steady open-loop load through the real local grid (`LocalStack`, what `aigrid up`
runs): every client-visible error and every request Envoy failed open on is counted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extproc.stack.local import LocalStack, SiteSpec
from extproc.stack.openloop import OpenLoop, Summary, read_access_log, recovery_s, summarize
from extproc.stack.procs import RestartPolicy, free_port
from harness import chat_body


@dataclass
class FaultRun:
    name: str
    rate: float
    seconds: float
    summary: Summary
    recovery_s: float

    def row(self) -> str:
        return f"{self.name}: {self.rate:.0f} req/s for {self.seconds:.0f}s: {self.summary.line()}, recovery {self.recovery_s:.2f}s"


def run_fault(
    stack: LocalStack,
    name: str,
    fault: Callable[[], None],
    *,
    rate: float = 20,
    before_s: float = 2.0,
    after_s: float = 6.0,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> FaultRun:
    """Load for before_s, the fault, load for after_s while supervising (restarts happen), summary."""
    load = OpenLoop(f"{stack.url}/v1/chat/completions", body or chat_body("ping", max_tokens=4), rate, headers=headers).start()
    t_start = load.started_at

    def supervise_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stack.supervise()
            time.sleep(0.05)

    supervise_for(before_s)
    fault_at = time.time()
    fault()
    supervise_for(after_s)
    outcomes = load.stop()
    access = read_all_access(stack, t_start, len(outcomes))
    run = FaultRun(name, rate, before_s + after_s, summarize(outcomes, access), recovery_s(fault_at, outcomes, access))
    print("\n" + run.row())
    return run


def read_all_access(stack: LocalStack, since: float, expected: int, timeout: float = 5.0) -> list:
    """Envoy flushes its access log once a second: wait until it holds every request sent."""
    path = stack.workdir / "logs" / "envoy.log"
    deadline = time.monotonic() + timeout
    while True:
        access = read_access_log(path, since=since)
        if len(access) >= expected or time.monotonic() > deadline:
            return access
        time.sleep(0.2)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    made: list[LocalStack] = []

    def make(upstream: str = "standin", sites: tuple[SiteSpec, ...] | None = None, **overrides: dict) -> LocalStack:
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
