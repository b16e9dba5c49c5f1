"""`aigrid demo` end to end (short), and its bad-input paths: clear message, non-zero exit, nothing left."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from extproc.stack.procs import free_port, port_is_free

pytestmark = pytest.mark.slow


def _ours_running(workdir) -> list[str]:  # type: ignore[no-untyped-def]
    """Processes whose command line mentions this run's workdir (every child we start does)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(workdir) in line and "ps -eo" not in line]


def test_short_demo_writes_report_and_leaves_nothing_running(tmp_path):
    port, admin = free_port(), free_port()
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "demo", "--duration", "6", "--concurrency", "6", "--scenarios", "a,c",
         "--port", str(port), "--admin-port", str(admin), "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out / "loadtest.json").read_text())
    assert set(doc["results"]) == {"a", "c"}
    a, c = doc["results"]["a"], doc["results"]["c"]
    assert a["summary"]["ok"] > 0 and c["summary"]["ok"] > 0
    # (a) sends everything to the edge site; the per-site counts are Envoy's own.
    assert a["envoy_sites"]["edge"]["upstream_rq_total"] == a["summary"]["ok"] + sum(a["summary"]["errors"].values())
    assert a["envoy_sites"].get("remote", {}).get("upstream_rq_total", 0) == 0
    assert (out / "throughput.png").exists()
    assert "every process stopped" in r.stdout
    assert port_is_free(port) and port_is_free(admin)
    assert _ours_running(tmp_path) == []


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "extproc.cli", "demo", "--port", str(taken), "--admin-port", str(free_port()),
             "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )
    assert r.returncode == 1
    assert f"port {taken} is already taken" in r.stderr
    assert _ours_running(tmp_path) == []


def test_bad_scenario_list(tmp_path):
    r = subprocess.run([sys.executable, "-m", "extproc.cli", "demo", "--scenarios", "x,y"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--scenarios" in r.stderr
