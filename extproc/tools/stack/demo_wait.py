"""Waiting helpers of the demo's live part: the gateway sees every site, and every site is idle."""

from __future__ import annotations

import time
import urllib.request

from extproc.tools.stack.local import LocalStack
from extproc.tools.stack.procs import StackError


def _site_idle(metrics_url: str) -> bool:
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as r:  # noqa: S310 (loopback)
            text = r.read().decode()
    except OSError:
        return False
    busy = 0.0
    for line in text.splitlines():
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
            busy += float(line.rsplit(" ", 1)[-1])
    return busy == 0.0


def _gateway_sees_all_sites(stack: LocalStack) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=2) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return False
    seen = 0
    for s in stack.sites:
        for line in text.splitlines():
            if line.startswith(f'aigrid_site_pressure{{site="{s.name}"}}') and float(line.rsplit(" ", 1)[-1]) >= 0:
                seen += 1
                break
    return seen == len(stack.sites)


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_ready_and_idle(stack: LocalStack) -> None:
    _wait(lambda: _gateway_sees_all_sites(stack), 60, "the gateway to read every site's load")
    for s in stack.sites:
        url = f"http://127.0.0.1:{stack.site_ports[s.name]}/metrics"
        _wait(lambda url=url: _site_idle(url), 120, f"site {s.name} to drain")
