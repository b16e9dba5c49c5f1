"""The compressor's model worker (its own process) stuck, slow and killed, under open-loop load of long
RAG requests through Envoy: requests are never failed or held past the compressor's deadline; the body
simply goes uncompressed (`aigrid_rewrite_skips_total`). A killed worker is started again by its
supervisor, and compression resumes."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import time

import pytest

from faultkit import run_fault, supervise_for  # type: ignore[import-not-found]
from extproc.gateway.compression.offline import install_tiktoken_cache
from extproc.gateway.compression.runtime.process import WORKER_COMM
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec
from proctree import descendants  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):  # type: ignore[no-untyped-def]
    from extproc.tools.evalcompress.tinymodel import build_tiny_model

    install_tiktoken_cache()
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert-base-multilingual-cased")


def _bodies(n: int = 16) -> list[bytes]:
    spec = SyntheticRagSpec(prompt_tokens={"median": 600, "sigma": 0.1, "min": 500, "max": 700}, documents_min=4,
                   documents_max=4, japanese_share=0.0)
    out = []
    for seed in range(n):
        item = synth_rag_item(random.Random(seed), spec)
        out.append(json.dumps({"model": "m", "max_tokens": 8, "messages": rag_messages(item)}).encode())
    return out


def _comm(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def _worker_pid(st) -> int:  # type: ignore[no-untyped-def]
    """The model worker, told from the forkserver it was forked from by the name it gives itself."""
    kids = descendants(st.serve_proc.pid)
    pids = [p for p in kids if _comm(p) == WORKER_COMM]
    assert len(pids) == 1, {p: (_comm(p), cmd) for p, cmd in kids.items()}
    return pids[0]


def _metric(st, name: str) -> float:  # type: ignore[no-untyped-def]
    from harness import http

    for line in http("GET", f"http://127.0.0.1:{st.metrics_port}/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _skips(st) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from harness import http

    out: dict[str, float] = {}
    for line in http("GET", f"http://127.0.0.1:{st.metrics_port}/metrics").body.decode().splitlines():
        if line.startswith("aigrid_rewrite_skips_total{"):
            out[line.split('reason="', 1)[1].split('"', 1)[0]] = float(line.split()[-1])
        elif line.startswith("aigrid_rewrites_total "):
            out["rewritten"] = float(line.split()[-1])
    return out


@pytest.fixture(scope="module")
def comp_grid(tmp_path_factory, tiny_model):  # type: ignore[no-untyped-def]
    from faultkit import _make  # type: ignore[import-not-found]

    st = _make(tmp_path_factory.mktemp("compgrid"), "standin", None, {
        "compression": {"enabled": True, "model_path": str(tiny_model), "ranker": "bm25", "fixed_rate": 0.5,
                        "break_even": False, "min_prompt_tokens": 200, "deadline_ms": 1000,
                        "compressor_tokens_per_s": 50_000,
                        "coarse": False},  # every compression goes through the model worker
    })
    yield st
    st.stop()


# Every request its own documents, across the three runs too (each numbers its requests from 0): the
# compressor caches results by content (same input, same bytes), so a repeated body would be answered
# from that cache without the worker this test takes down.
BODIES = _bodies(400)
_SENT = itertools.count()


def _body(seq: int) -> bytes:
    return BODIES[next(_SENT) % len(BODIES)]


@pytest.mark.parametrize("mode", ["stuck", "slow"])
def test_compressor_worker_faults_cost_no_request(comp_grid, mode: str) -> None:
    st = comp_grid
    pid = _worker_pid(st)
    before = _skips(st)

    def fault() -> None:
        if mode == "stuck":  # frozen for 3 s (a hung model call), then it resumes
            os.kill(pid, signal.SIGSTOP)
            supervise_for(st, 3.0)
            os.kill(pid, signal.SIGCONT)
        elif mode == "slow":  # runs a fifth of the time for 3 s
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.4)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.1)

    run = run_fault(st, f"compressor worker {mode}", fault, rate=4, body=_body, before_s=2, after_s=3)
    after = _skips(st)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(f"compressions / skips during the run: {delta}")
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0 and run.summary.unrouted == 0
    assert delta.get("rewritten", 0) > 0  # it compressed before the fault
    if mode == "stuck":
        assert sum(v for k, v in delta.items() if k != "rewritten") > 0  # and skipped while it could not
    # Nothing waits past the compressor's deadline (1 s) plus Envoy's own path.
    assert run.summary.p99_ms < 2000, run.row()


def test_killed_worker_is_respawned_and_compression_resumes(comp_grid) -> None:
    """SIGKILL the model worker under load: the supervisor starts a new one (counted on /metrics) and
    compressed bodies come back within 5 s of the kill; no client sees an error meanwhile."""
    st = comp_grid
    pid = _worker_pid(st)
    restarts0 = _metric(st, "aigrid_compression_worker_restarts_total")
    compressed = 'aigrid_compression_requests_total{outcome="compressed"}'
    resumed: dict[str, float] = {}

    def fault() -> None:
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        at_kill = _metric(st, compressed)
        while time.monotonic() - t0 < 15:
            st.supervise()
            if _metric(st, "aigrid_compression_worker_up") == 0.0:
                resumed.setdefault("down_seen_s", time.monotonic() - t0)
            if _metric(st, "aigrid_compression_worker_restarts_total") > restarts0 and "up_s" not in resumed:
                resumed["up_s"] = time.monotonic() - t0
            if "up_s" in resumed and _metric(st, compressed) > at_kill:
                resumed["compressing_s"] = time.monotonic() - t0
                return
            time.sleep(0.05)

    run = run_fault(st, "compressor worker killed", fault, rate=4, body=_body, before_s=2, after_s=3)
    print(f"after the kill: {resumed}")
    assert run.summary.errors == 0, run.summary.error_kinds
    assert run.summary.no_site == 0 and run.summary.unrouted == 0
    assert "compressing_s" in resumed, resumed  # a new worker, and compressed bodies again
    assert resumed["compressing_s"] <= 5.0, resumed
    new = _worker_pid(st)
    assert new != pid
    assert _metric(st, "aigrid_compression_worker_restarts_total") == restarts0 + 1
    assert run.summary.p99_ms < 2000, run.row()
